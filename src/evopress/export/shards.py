"""Write a state dict as safetensors shards with the index file Hugging Face loaders expect.

Layout as `save_pretrained` writes it: one `model.safetensors`, or `model-0000i-of-0000n.safetensors`
plus `model.safetensors.index.json` once the weights pass the shard size. Tensors that share
storage (tied input and output embeddings) are written once, under the first name; the loader
re-ties them from the config.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

SHARD_BYTES = 5 * 2**30
SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"


def _storage_key(t: torch.Tensor):
    return (t.device, t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.dtype)


def untie(state: dict) -> dict:
    """The state without second names for the same tensor (keeps the first name)."""
    seen, out = set(), {}
    for name, tensor in state.items():
        key = _storage_key(tensor)
        if key not in seen:
            seen.add(key)
            out[name] = tensor
    return out


def _plan_shards(state: dict, shard_bytes: int) -> list[list[str]]:
    shards, size = [[]], 0
    for name, tensor in state.items():
        nbytes = tensor.numel() * tensor.element_size()
        if shards[-1] and size + nbytes > shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(name)
        size += nbytes
    return shards


def save_shards(state: dict, out_dir: Path, shard_bytes: int = SHARD_BYTES) -> list[Path]:
    """Write `state` into `out_dir`; returns the files written."""
    state = untie(state)
    shards = _plan_shards(state, shard_bytes)
    names = [SINGLE_FILE] if len(shards) == 1 else [
        f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))
    ]
    written = []
    for file_name, keys in zip(names, shards):
        # One shard at a time on the CPU, so a GPU-resident model never needs a full host copy.
        part = {k: state[k].detach().to("cpu").contiguous() for k in keys}
        save_file(part, str(out_dir / file_name), metadata={"format": "pt"})
        written.append(out_dir / file_name)
    if len(shards) > 1:
        weight_map = {k: f for f, keys in zip(names, shards) for k in keys}
        total = sum(t.numel() * t.element_size() for t in state.values())
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (out_dir / INDEX_FILE).write_text(json.dumps(index, indent=2, sort_keys=True))
        written.append(out_dir / INDEX_FILE)
    return written
