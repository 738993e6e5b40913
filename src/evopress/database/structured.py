"""The structured database: every level of every block's attention heads and MLP channels.

DarwinLM's database (arXiv 2502.07780, §3; `compress.obs_struct`), built by the shared loop
(`database.build.build_store`): dense propagation, so a sublayer's levels do not depend on the
levels chosen elsewhere; one Hessian per input group (only o_proj's and down_proj's are used);
resumable block by block. A unit is a sublayer, named by its output projection (o_proj, down_proj),
whose input columns are the heads or channels removed. Level i removes at least i/10 of the
sublayer's parameters (`compress.structured`), the last removes it all. A level is stored compact:
the kept heads or channels ("<unit>:<i>:kept", int32) and the updated output projection on them
("<unit>:<i>:weight", the model's dtype); the reference keeps a dense copy per level. The exact
parameters of each level, and an attention level's kept KV heads, go into the manifest.
"""

from __future__ import annotations

import torch

from evopress.compress.obs_struct import channel_levels, head_levels
from evopress.compress.sparsegpt import relative_errors
from evopress.compress.structured import MLP, Attention
from evopress.database.bank import LevelBank
from evopress.database.store import VariantStore

KINDS = ("attn", "mlp")


def structured_units(adapter, steps: int = 10, group: int = 32) -> list[dict]:
    """Per block and sublayer kind: its unit, with what each level removes (parameters for
    attention, channels for the MLP)."""
    geometry = adapter.geometry()
    attn, mlp = Attention.of(geometry), MLP.of(geometry)
    units = []
    for b in range(adapter.num_blocks):
        for kind in KINDS:
            short = adapter.layout.output_projection[kind]
            targets = attn.removed_targets(steps) if kind == "attn" else mlp.removed_channels(steps, group)
            units.append({"name": adapter.linear_name(b, short), "block": b, "kind": kind,
                          "shape": list(adapter.linears(b)[short].weight.shape), "removes": targets})
    return units


def structured_block_levels(table: dict, group: int = 32, damp: float = 0.01):
    """`block_levels` for `build_store`: both sublayers' levels, compact, their errors and parameters."""

    def block_levels(adapter, block: int, hessians: dict):
        geometry = adapter.geometry()
        attn, mlp = Attention.of(geometry), MLP.of(geometry)
        linears = adapter.linears(block)
        tensors, errors, params, kv_heads = {}, {}, {}, {}
        for kind in KINDS:
            short = adapter.layout.output_projection[kind]
            weight, hessian = linears[short].weight.data, hessians[short]
            unit = table[adapter.linear_name(block, short)]
            if kind == "mlp":
                levels = channel_levels(weight, hessian, unit["removes"], group, damp)
                params[unit["name"]] = [mlp.params(len(kept)) for kept, _ in levels]
            else:
                states = head_levels(weight, hessian, attn.heads, attn.kv_heads, unit["removes"], damp)
                levels = [(_columns(s.heads, attn.head_dim, weight.device), s.o_weight) for s in states]
                params[unit["name"]] = [attn.params(len(s.heads), len(s.kv_heads)) for s in states]
                kv_heads[unit["name"]] = [list(s.kv_heads) for s in states]
            full = []
            for i, (kept, w) in enumerate(levels):
                w = w.to(weight.dtype)  # what the store keeps is what the errors measure
                tensors[f"{unit['name']}:{i}:kept"] = (kept if kind == "mlp" else kept[::attn.head_dim] // attn.head_dim).int()
                tensors[f"{unit['name']}:{i}:weight"] = w
                full.append(expand(w.float(), kept, weight.shape[1]))
            errors[unit["name"]] = relative_errors(weight, torch.stack(full), hessian)
        return tensors, errors, {"params": params, "kv_heads": kv_heads}
    return block_levels


def _columns(heads, head_dim: int, device) -> torch.Tensor:
    return (torch.tensor(heads, dtype=torch.long, device=device).view(-1, 1) * head_dim
            + torch.arange(head_dim, device=device)).flatten()


def expand(weight: torch.Tensor, kept: torch.Tensor, cols: int) -> torch.Tensor:
    """The dense-shaped weight with zeros in the removed columns (what the search runs)."""
    out = weight.new_zeros(weight.shape[0], cols)
    out[:, kept.long()] = weight
    return out


def stored_level(unit: dict, i: int, tensors: dict, head_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(kept input columns, compact weight) of a stored level."""
    kept = tensors[f"{unit['name']}:{i}:kept"].long()
    if unit["kind"] == "attn":
        kept = _columns(kept.tolist(), head_dim, kept.device)
    return kept, tensors[f"{unit['name']}:{i}:weight"]


class StructBank(LevelBank):
    """Structured levels resident compact; a level is put on the model as its output projection
    with zeros in the removed columns, so the rows of q/k/v or gate/up that fed them stop mattering
    (the same outputs as the physically smaller model).

    `levels` (unit name -> store level indices) keeps only those levels, in that order, so a
    search over fewer levels (those an export format can write) indexes the bank directly;
    None keeps them all. A level that removes the whole sublayer costs 0 parameters: the smaller
    model has no such sublayer, so its output projection's bias (Llama with attention_bias or
    mlp_bias) is zero there too, in `apply` and in the stacked rows alike.
    """

    def __init__(self, adapter, store: VariantStore, levels: dict[str, list[int]] | None = None,
                 device=None, cache_bytes: int | None = None):
        self.levels, self.kv_heads, self.kinds = levels, {}, {}
        self.head_dim = adapter.geometry().head_dim
        super().__init__(adapter, store, device, cache_bytes)
        self.dense_bias = {name: m.bias.data for name, m in self.modules.items() if m.bias is not None}
        self.zero_bias = {name: torch.zeros_like(b) for name, b in self.dense_bias.items()}

    def _load_block(self, adapter, store: VariantStore, block: int, device) -> None:
        tensors, values = store.read_block(block, device), store.values(block)
        for unit in (u for u in store.units if u["block"] == block):
            name = unit["name"]
            order = range(len(values["params"][name])) if self.levels is None else self.levels[name]
            self.variants[name] = [stored_level(unit, i, tensors, self.head_dim) for i in order]
            self.kinds[name] = unit["kind"]
            if unit["kind"] == "attn":
                self.kv_heads[name] = [tuple(values["kv_heads"][name][i]) for i in order]

    def decode(self, name: str, level: int) -> torch.Tensor:
        kept, weight = self.variants[name][level]
        dense = self.dense[name]
        return expand(weight.to(dense.dtype), kept, dense.shape[1])

    def removes_all(self, name: str, level: int | None) -> bool:
        return level is not None and len(self.variants[name][level][0]) == 0

    def bias(self, name: str, level: int | None):
        dense = self.dense_bias.get(name)
        return self.zero_bias[name] if dense is not None and self.removes_all(name, level) else dense

    def apply(self, genome) -> int:
        changed = super().apply(genome)
        for name in self.dense_bias:
            self.modules[name].bias.data = self.bias(name, self.current[name])
        return changed

    def kept(self, name: str, level: int) -> tuple[list[int], tuple[int, ...], torch.Tensor]:
        """(kept query heads or MLP channels, in the order of the weight's columns; kept KV heads,
        () for the MLP; the compact output projection) of a unit at a bank level."""
        columns, weight = self.variants[name][level]
        if name not in self.kv_heads:
            return columns.tolist(), (), weight
        return (columns[::self.head_dim] // self.head_dim).tolist(), self.kv_heads[name][level], weight
