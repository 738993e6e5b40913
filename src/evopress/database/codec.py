"""Compact sparse variants: a packed keep-bitmask plus the kept values, in the weight's dtype.

One level of an m×n matrix at sparsity s takes m·n/8 bytes of mask plus (1−s)·m·n values,
instead of a dense copy (the reference stores dense fp16 tensors per level, EvoPress §2.7).
Packing is plain torch bit arithmetic, so it runs on any device and is byte-for-byte
deterministic.
"""

from __future__ import annotations

import torch

_BITS = torch.tensor([128, 64, 32, 16, 8, 4, 2, 1], dtype=torch.uint8)


def pack(keep: torch.Tensor) -> torch.Tensor:
    """Bool tensor -> uint8 bytes, eight flags per byte, first flag in the high bit."""
    flat = keep.reshape(-1).to(torch.uint8)
    pad = (-flat.numel()) % 8
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    return (flat.view(-1, 8) * _BITS.to(flat.device)).sum(dim=1, dtype=torch.uint8)


def unpack(packed: torch.Tensor, numel: int) -> torch.Tensor:
    bits = (packed.unsqueeze(1) & _BITS.to(packed.device)) != 0
    return bits.reshape(-1)[:numel]


def encode(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mask, values) of a sparse matrix: which entries are non-zero, and those entries in order."""
    keep = weight != 0
    return pack(keep), weight.reshape(-1)[keep.reshape(-1)].contiguous()


def decode(mask: torch.Tensor, values: torch.Tensor, shape) -> torch.Tensor:
    numel = 1
    for d in shape:
        numel *= d
    out = values.new_zeros(numel)
    out[unpack(mask, numel)] = values
    return out.view(*shape)
