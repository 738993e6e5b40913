"""Export format "hf": a plain Hugging Face directory of the source architecture.

Whole blocks whose attention and MLP are both dropped are deleted (layers renumbered,
`num_hidden_layers` lowered): the layout ShortGPT-style depth pruning publishes, which every engine
loads (ecosystem §2.2). A block with only one sublayer dropped has no standard representation, so
it keeps its weights with the sublayer's output projection zeroed: the sublayer then adds exactly
zero to the residual stream, as in EvoPress's in-memory skipping (§2.8), at full compute cost.
Stock `AutoModelForCausalLM.from_pretrained(dir)` loads it, no remote code.
"""

from __future__ import annotations

from pathlib import Path

import torch

from evopress.export.directory import staged
from evopress.export.plan_file import renumbered_tensors, write_plan_file
from evopress.export.shards import save_shards

NOTES = (
    "Blocks dropped as attn+mlp are deleted and the rest renumbered (see block_map). "
    "Blocks dropped as attn or mlp only keep their weights with that sublayer's output projection "
    "zeroed, so it adds exactly 0; they cost full compute. Use format 'nemotron-nas' to remove them."
)


def _zeroed(layout, plan, block: int, rest: str) -> bool:
    """Whether tensor `rest` of `block` is the output projection of a dropped sublayer."""
    kind = layout.kind_of(rest)
    if kind is None or not getattr(plan, kind)[block]:
        return False
    return rest.startswith(layout.output_projection[kind] + ".")


def hf_state(adapter, plan) -> dict:
    """The exported tensors: removed blocks gone, survivors renumbered, dropped projections zero."""
    out = {}
    for name, block, rest, tensor in renumbered_tensors(adapter, plan):
        if block is not None and _zeroed(adapter.layout, plan, block, rest):
            tensor = torch.zeros_like(tensor)
        out[name] = tensor
    return out


def export_hf(adapter, plan, tokenizer, out_dir, overwrite: bool = False) -> Path:
    """Write `plan` applied to `adapter`'s model as a stock Hugging Face model directory."""
    adapter.check_plan(plan)
    out_dir = Path(out_dir)
    with staged(out_dir, overwrite) as scratch:
        save_shards(hf_state(adapter, plan), scratch)
        adapter.save_config(adapter.config_without_blocks(plan.removed_blocks), scratch)
        if tokenizer is not None:
            tokenizer.save_pretrained(scratch)
        write_plan_file(scratch, plan, "hf", NOTES, adapter.name_or_path)
    return out_dir.expanduser().resolve()
