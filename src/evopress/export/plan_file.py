"""`evopress_plan.json`: what was dropped, in which format, and how the export encodes it.

Saved next to the weights so an exported model says how it was made: the plan in the reference's
per-block `none|attn|mlp|attn+mlp` notation (EvoPress §3.3), and the map from original block
indices to the indices in the export.
"""

from __future__ import annotations

import json
from pathlib import Path

import evopress
from evopress.export.directory import PLAN_FILE


def block_map(plan) -> dict[int, int]:
    """Original block index -> index in the export, for every block that is not removed whole."""
    removed = set(plan.removed_blocks)
    return {old: new for new, old in enumerate(i for i in range(plan.num_blocks) if i not in removed)}


def renumbered_tensors(adapter, plan):
    """Yield (export name, block, name within block, tensor) for every tensor not removed with its block.

    `block` is None for tensors outside the decoder blocks (embeddings, final norm, head).
    """
    layout = adapter.layout
    new_index = block_map(plan)
    for key, tensor in adapter.dense_state_dict().items():
        where = layout.split(key)
        if where is None:
            yield key, None, None, tensor
            continue
        block, rest = where
        if block in new_index:
            yield f"{layout.block_prefix}{new_index[block]}.{rest}", block, rest, tensor


def write_plan_file(out_dir: Path, plan, fmt: str, notes: str, source: str | None = None) -> Path:
    record = {
        "evopress_version": evopress.__version__,
        "format": fmt,
        "source_model": source,
        "plan": plan.to_dict(),
        "describe": plan.describe(),
        "removed_blocks": list(plan.removed_blocks),
        "block_map": {str(old): new for old, new in block_map(plan).items()},
        "notes": notes,
    }
    path = Path(out_dir) / PLAN_FILE
    path.write_text(json.dumps(record, indent=2) + "\n")
    return path
