"""Export formats of a structured-pruning result (DarwinLM, arXiv 2502.07780): the smaller model itself.

Each block's attention keeps some query heads (and the KV heads they read), its MLP some
channels. The search runs them as the dense-shaped model with zeros in the removed columns; here
the weights are physically sliced instead: q/k/v keep the rows of the kept query and KV heads,
gate/up the rows of the kept channels, and o_proj/down_proj become the database's compact,
OBS-updated weight on the kept columns. A sublayer with nothing kept is absent (no weights, no
pre-norm, no bias).

  pruned        config.json with per-layer query heads, KV heads and MLP width (0: absent),
                `PrunedLlamaForCausalLM` from evopress's bundled modeling code; loads in
                transformers with trust_remote_code=True. Any level of the database.
  nemotron-nas  DeciLM / Nemotron-NAS `block_configs` (`evopress.export.deci`): an attention is
                full or no_op, an MLP width a multiple of 256 reachable through `ffn_mult`, or
                no_op; blocks with nothing left are deleted. Read natively by vLLM.

Both write `evopress_plan.json`: per block, the kept query heads, KV heads and MLP channels.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

import evopress
from evopress.errors import ExportError
from evopress.export.deci import (
    add_zero_o_biases,
    block_configs,
    check_expressible,
    deci_config,
    llama_fields,
    write_remote_model,
)
from evopress.export.directory import PLAN_FILE, staged
from evopress.export.shards import untie

AUTO_MAP = {
    "AutoConfig": "configuration_nemotron_nas.PrunedLlamaConfig",
    "AutoModelForCausalLM": "modeling_nemotron_nas.PrunedLlamaForCausalLM",
}
NOTES = {
    "pruned": "Structured pruning (DarwinLM): per-layer query heads, KV heads and MLP width in config.json "
              "(0: the sublayer is absent); q/k/v and gate/up keep the rows of the kept heads and channels, "
              "o_proj/down_proj are the OBS-updated weights on them. transformers needs trust_remote_code=True "
              "(configuration/modeling files are included).",
    "nemotron-nas": "Structured pruning (DarwinLM) in the DeciLM / Nemotron-NAS block_configs layout: full or "
                    "no_op attentions, MLP widths through ffn_mult; blocks with nothing left are deleted (see "
                    "block_map). Native in vLLM; transformers needs trust_remote_code=True.",
}
FORMATS = tuple(NOTES)


@dataclass(frozen=True)
class Cut:
    """What one sublayer keeps: query heads (attention, with the KV heads they read) or MLP
    channels, in the order of `output`'s columns, and the output projection on them (compact:
    hidden x kept heads * head_dim, or hidden x kept channels). Nothing kept: the sublayer is gone."""

    kept: tuple[int, ...]
    output: torch.Tensor
    kv_heads: tuple[int, ...] = ()

    @property
    def present(self) -> bool:
        return bool(self.kept)


def layer_sizes(cuts: list[dict]) -> list[tuple[int, int, int]]:
    """(query heads, KV heads, MLP width) per block, 0 for an absent sublayer."""
    return [(len(c["attn"].kept), len(c["attn"].kv_heads) if c["attn"].present else 0, len(c["mlp"].kept))
            for c in cuts]


def check_kv_groups(geo, cut: Cut, block: int) -> None:
    """Kept query head i must read the KV head it read in the source model.

    The smaller attention shares its j-th KV head among kept heads j*m .. j*m+m-1 (m = kept heads
    per kept KV head, Llama's rule); with the kept heads ascending and the same number kept in
    every kept KV group (what the database's levels keep), that is head i's own KV head,
    kv_heads[i // m]."""
    if not cut.present:
        return
    heads, kv_heads = cut.kept, cut.kv_heads
    group = geo.num_heads // geo.num_kv_heads  # query heads per KV head in the source model
    per_kv = len(heads) // len(kv_heads) if kv_heads else 0
    if not per_kv or len(heads) != per_kv * len(kv_heads) or any(
            h // group != kv_heads[i // per_kv] for i, h in enumerate(heads)):
        raise ExportError(f"block {block}: kept query heads {list(heads)} do not fill the kept KV heads "
                          f"{list(kv_heads)} equally and in order, so the smaller attention would pair them "
                          "with other KV heads than the source model; this database level cannot be exported")


def _rows(unit: str, cut: Cut, head_dim: int) -> torch.Tensor:
    """Output rows of an input projection that the cut keeps (`CheckpointLayout.row_units`)."""
    if unit == "channels":
        return torch.tensor(cut.kept, dtype=torch.long)
    heads = torch.tensor(cut.kept if unit == "heads" else cut.kv_heads, dtype=torch.long)
    return (heads[:, None] * head_dim + torch.arange(head_dim)).flatten()


def _sliced(layout, kind: str, rest: str, tensor: torch.Tensor, cut: Cut, head_dim: int) -> torch.Tensor:
    module, _, param = rest.rpartition(".")
    if module == layout.output_projection[kind]:
        if param != "weight":
            return tensor  # o/down bias: added to the sublayer's output, whatever it keeps
        if cut.output.shape[0] != tensor.shape[0]:
            raise ExportError(f"{rest}: a compact weight of shape {tuple(cut.output.shape)} for {tuple(tensor.shape)}")
        return cut.output.to(tensor.dtype)
    unit = layout.row_units.get(module)
    if unit is None:
        return tensor  # pre-norms and Qwen3's per-head q/k norms keep their size
    rows = _rows(unit, cut, head_dim).to(tensor.device)
    return tensor.index_select(0, rows)


def pruned_state(adapter, cuts: list[dict]) -> dict:
    """Every tensor of the smaller model, under the source model's names (blocks not renumbered)."""
    layout, head_dim = adapter.layout, adapter.geometry().head_dim
    out = {}
    for key, tensor in adapter.dense_state_dict().items():
        where = layout.split(key)
        kind = None if where is None else layout.kind_of(where[1])
        if kind is None:
            out[key] = tensor  # embeddings, final norm, LM head
            continue
        block, rest = where
        cut = cuts[block][kind]
        if cut.present:
            out[key] = _sliced(layout, kind, rest, tensor, cut, head_dim)
    for b, cut in enumerate(cuts):  # the compact weights must cover exactly the kept columns
        for kind, width in (("attn", len(cut["attn"].kept) * head_dim), ("mlp", len(cut["mlp"].kept))):
            name = f"{layout.block_prefix}{b}.{layout.output_projection[kind]}.weight"
            if name in out and out[name].shape[1] != width:
                raise ExportError(f"{name}: {out[name].shape[1]} columns for {width} kept")
    return out


def pruned_config(geo, sizes) -> dict:
    heads, kv_heads, widths = (list(column) for column in zip(*sizes))
    return {"architectures": ["PrunedLlamaForCausalLM"], "model_type": "evopress-pruned", "auto_map": AUTO_MAP,
            "num_hidden_layers": len(sizes), **llama_fields(geo),
            # q/k/v and o biases apart (Qwen2 has the first only); Qwen3's per-head q/k norms
            "attention_bias": geo.qkv_bias, "o_proj_bias": geo.o_bias, "qk_norm": geo.qk_norm,
            "num_attention_heads_per_layer": heads, "num_key_value_heads_per_layer": kv_heads,
            "intermediate_size_per_layer": widths}


def _renumbered(layout, state: dict, new_index: dict[int, int]) -> dict:
    out = {}
    for key, tensor in state.items():
        where = layout.split(key)
        if where is None:
            out[key] = tensor
        elif where[0] in new_index:
            out[f"{layout.block_prefix}{new_index[where[0]]}.{where[1]}"] = tensor
    return out


def nemotron_nas_layout(adapter, cuts, sizes) -> tuple[dict, dict, dict[int, int]]:
    """(state, config, block map) of the cuts in the Nemotron-NAS layout; blocks with nothing left deleted."""
    geo, layout = adapter.geometry(), adapter.layout
    check_expressible(geo, sizes=sizes)
    config = deci_config(geo, block_configs(geo, sizes))  # ffn_mult_for refuses a width it cannot write
    new_index = {old: new for new, old in enumerate(b for b, (h, _, w) in enumerate(sizes) if h or w)}
    state = _renumbered(layout, pruned_state(adapter, cuts), new_index)
    add_zero_o_biases(layout, geo, state, [new for old, new in new_index.items() if sizes[old][0]])
    return state, config, new_index


def check_pruned_model(geo) -> None:
    """Refuse a model the `pruned` layout cannot run exactly (before any work is spent on it)."""
    if geo.sliding_window is not None and geo.sliding_window < geo.max_position_embeddings:
        raise ExportError(f"the model uses sliding-window attention (window {geo.sliding_window}), which the "
                          "pruned layout's modeling code does not run; export with format 'hf' instead")


def export_structured(adapter, cuts: list[dict], tokenizer, out_dir, fmt: str = "pruned",
                      record: dict | None = None, overwrite: bool = False) -> dict:
    """Write the smaller model `cuts` describe (per block {"attn": Cut, "mlp": Cut}) in format `fmt`.

    `record` (the plan's cost, levels ...) goes into evopress_plan.json. Returns the directory,
    its parameters and the per-block sizes."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown structured export format {fmt!r}; use one of {', '.join(FORMATS)}")
    if len(cuts) != adapter.num_blocks:
        raise ExportError(f"{len(cuts)} blocks of cuts for a model of {adapter.num_blocks}")
    geo = adapter.geometry()
    for b, cut in enumerate(cuts):
        check_kv_groups(geo, cut["attn"], b)
    sizes = layer_sizes(cuts)
    if fmt == "pruned":
        check_pruned_model(geo)
        state, config, new_index = pruned_state(adapter, cuts), pruned_config(geo, sizes), None
    else:
        state, config, new_index = nemotron_nas_layout(adapter, cuts, sizes)
    out_dir = Path(out_dir)
    with staged(out_dir, overwrite) as scratch:
        write_remote_model(scratch, state, config, adapter, tokenizer)
        write_description(scratch, adapter, cuts, fmt, new_index, record or {})
    return {"path": out_dir.expanduser().resolve(), "params": sum(t.numel() for t in untie(state).values()),
            "layer_sizes": sizes}


def write_description(out_dir: Path, adapter, cuts, fmt: str, new_index, record: dict) -> Path:
    """evopress_plan.json: what each block keeps, one line per block (MLP channel lists are long)."""
    layers = []
    for b, cut in enumerate(cuts):
        attn, mlp = cut["attn"], cut["mlp"]
        layers.append({"block": b, "exported_as": b if new_index is None else new_index.get(b),
                       "query_heads": list(attn.kept), "kv_heads": list(attn.kv_heads) if attn.present else [],
                       "mlp_channels": len(mlp.kept), "kept_channels": list(mlp.kept)})
    head = {"evopress_version": evopress.__version__, "format": fmt, "method": "prune (DarwinLM, arXiv 2502.07780)",
            "source_model": adapter.name_or_path, **record, "notes": NOTES[fmt]}
    text = json.dumps(head, indent=2)[:-2] + ',\n  "layers": [\n'
    text += ",\n".join("    " + json.dumps(layer) for layer in layers) + "\n  ]\n}\n"
    path = Path(out_dir) / PLAN_FILE
    path.write_text(text)
    return path
