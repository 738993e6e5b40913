"""The quantization database: every level of every linear layer as packed codes and params.

Built by the shared loop (`database.build.build_store`: dense propagation by default, so a layer's
levels do not depend on the levels chosen elsewhere; the reference's propagation through one
quantized level as an option; one Hessian per input group, resumable block by block)
with GPTQ or round-to-nearest (`compress.gptq`). A level of an m×n layer is stored as its codes
packed at its own width ("<unit>:<i>:codes", m·n·bits/8 bytes) and its params in their exact
stored dtypes ("<unit>:<i>:<param>"); the reference keeps a dense fp16 copy per level instead
(EvoPress §2.7). A bf16 level is the dense weight and stores nothing. `QuantBank` keeps the packed
codes resident and decodes a level when a genome first asks for it (cached, `database.bank`).
"""

from __future__ import annotations

import torch

from evopress.compress.formats import parse_format
from evopress.compress.gptq import Quantized, dequantize, gptq_layers, rtn_levels
from evopress.compress.sparsegpt import relative_errors
from evopress.database.bank import LevelBank
from evopress.database.codec import pack_codes, unpack_codes
from evopress.database.store import VariantStore

BUILDERS = ("gptq", "rtn")


def formats_of(unit: dict, config: dict) -> list:
    return [parse_format(name, config["group"], config["symmetric"]) for name in unit["levels"]]


def quant_block_levels(table: dict, config: dict):
    """`block_levels` for `build_store`: every level of the block's layers, packed, and their errors."""

    def block_levels(adapter, block: int, hessians: dict):
        tensors, errors = {}, {}
        linears = adapter.linears(block)
        for group in adapter.linear_groups():  # layers that read the same inputs share one sweep
            names = [adapter.linear_name(block, short) for short in group]
            weights = [linears[short].weight.data for short in group]
            hessian = hessians[group[0]]
            formats = formats_of(table[names[0]], config)
            if config["builder"] == "rtn":
                per_layer = [rtn_levels(w, formats_of(table[n], config)) for n, w in zip(names, weights)]
            elif all(table[n]["levels"] == table[names[0]]["levels"] for n in names):
                per_layer = gptq_layers(weights, hessian, formats, config["blocksize"], config["damp"],
                                        config["act_order"])
            else:  # the layers order their levels differently (near-equal sizes): one sweep each
                per_layer = [gptq_layers([w], hessian, formats_of(table[n], config), config["blocksize"],
                                         config["damp"], config["act_order"])[0] for n, w in zip(names, weights)]
            for name, weight, levels in zip(names, weights, per_layer):
                values = torch.stack([dequantize(level, weight) for level in levels])
                errors[name] = relative_errors(weight, values, hessian)
                for i, level in enumerate(levels):
                    if level.codes is None:
                        continue
                    tensors[f"{name}:{i}:codes"] = pack_codes(level.codes, level.format.bits)
                    tensors.update({f"{name}:{i}:{k}": v.reshape(-1) if v.dim() == 0 else v
                                    for k, v in level.params.items()})
        return tensors, errors, {"builder": config["builder"]}
    return block_levels


def stored_levels(unit: dict, config: dict, tensors: dict) -> list[Quantized]:
    """A unit's levels as the store holds them (codes packed; bf16 without codes)."""
    levels = []
    for i, fmt in enumerate(formats_of(unit, config)):
        if fmt.kind == "bf16":
            levels.append(Quantized(fmt, None, {}))
            continue
        prefix = f"{unit['name']}:{i}:"
        params = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix) and k != prefix + "codes"}
        params = {k: v.reshape(()) if v.numel() == 1 and k == "global" else v for k, v in params.items()}
        levels.append(Quantized(fmt, tensors[prefix + "codes"], params))
    return levels


def unpacked(level: Quantized, dense: torch.Tensor) -> Quantized:
    """A stored level with its codes unpacked to [rows, cols] uint8."""
    if level.codes is None:
        return level
    codes = unpack_codes(level.codes, level.format.bits, dense.numel()).view(dense.shape)
    return Quantized(level.format, codes, level.params)


def quant_propagation(table: dict, config: dict):
    """`propagate` for `build_store`: later blocks see this block at level `config["propagate"]`
    (the reference propagates through its 3-bit model), or None for dense propagation."""
    name = config["propagate"]
    if name == "dense":
        return None

    def weights(adapter, block: int, tensors: dict) -> dict:
        out = {}
        for short, module in adapter.linears(block).items():
            unit = table[adapter.linear_name(block, short)]
            level = stored_levels(unit, config, tensors)[unit["levels"].index(name)]
            out[short] = dequantize(unpacked(level, module.weight), module.weight)
        return out
    return weights


class QuantBank(LevelBank):
    """Quantization levels resident as packed codes and params, decoded on first use."""

    def _load_block(self, adapter, store: VariantStore, block: int, device) -> None:
        tensors = store.read_block(block, device)
        for unit in (u for u in store.units if u["block"] == block):
            self.variants[unit["name"]] = stored_levels(unit, store.manifest["config"], tensors)

    def level(self, name: str, level: int) -> Quantized:
        """The stored level with its codes unpacked ([rows, cols] uint8), what exporters write."""
        return unpacked(self.variants[name][level], self.dense[name])

    def decode(self, name: str, level: int) -> torch.Tensor:
        dense = self.dense[name]
        return dequantize(self.level(name, level), dense).to(dense.dtype)
