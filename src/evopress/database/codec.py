"""Compact forms: packed keep-bitmasks, sparse matrices as mask + kept values, triangular factors.

One level of an m×n matrix at sparsity s takes m·n/8 bytes of mask (on disk, where values are
re-derived) plus (1−s)·m·n values (in memory), instead of a dense copy (the reference stores
dense fp16 tensors per level, EvoPress §2.7). Packing is plain torch arithmetic, so it runs on
any device and is byte-for-byte deterministic.
"""

from __future__ import annotations

import functools

import torch

_BITS = torch.tensor([128, 64, 32, 16, 8, 4, 2, 1], dtype=torch.uint8)


@functools.cache
def _bits(device: torch.device) -> torch.Tensor:
    """The bit weights on `device`, copied there once (a copy per call would wait for the device)."""
    return _BITS.to(device)


def pack(keep: torch.Tensor) -> torch.Tensor:
    """Bool tensor -> uint8 bytes, eight flags per byte, first flag in the high bit."""
    flat = keep.reshape(-1).to(torch.uint8)
    pad = (-flat.numel()) % 8
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    return (flat.view(-1, 8) * _bits(flat.device)).sum(dim=1, dtype=torch.uint8)


def unpack(packed: torch.Tensor, numel: int) -> torch.Tensor:
    bits = (packed.unsqueeze(1) & _bits(packed.device)) != 0
    return bits.reshape(-1)[:numel]


def encode(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mask, values) of a sparse matrix: which entries are non-zero, and those entries in order."""
    keep = weight != 0
    return pack(keep), weight.reshape(-1)[keep.reshape(-1)].contiguous()


def decode(mask: torch.Tensor, values: torch.Tensor, shape) -> torch.Tensor:
    """The dense matrix. Each kept entry finds its value through a running count of the mask, so
    nothing waits for the device (boolean indexing would copy a count to the host)."""
    numel = 1
    for d in shape:
        numel *= d
    keep = unpack(mask, numel)
    # a running count in int32 where it fits: half the memory traffic of int64 on an 8B layer
    count = torch.int32 if numel < 2**31 else torch.int64
    slot = torch.cumsum(keep, 0, dtype=count).sub_(1)  # -1 before the first kept entry: the zero appended below
    padded = torch.cat([values.reshape(-1), values.new_zeros(1)])
    return torch.where(keep, padded[slot], padded.new_zeros(())).view(*shape)


def _upper(n: int, device) -> torch.Tensor:
    return torch.ones(n, n, dtype=torch.bool, device=device).triu()


def pack_upper(factor: torch.Tensor) -> torch.Tensor:
    """The upper triangle of a square matrix, row by row (half the bytes of the full matrix)."""
    return factor[_upper(factor.shape[0], factor.device)]


def unpack_upper(packed: torch.Tensor) -> torch.Tensor:
    n = int(round(((8 * packed.numel() + 1) ** 0.5 - 1) / 2))
    out = packed.new_zeros(n, n)
    out.masked_scatter_(_upper(n, packed.device), packed)
    return out


def pack_codes(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """b-bit integer codes (uint8) -> bytes, each code's bits high first: a level of a quantized
    layer costs exactly its code bits in the store."""
    shifts = torch.arange(bits - 1, -1, -1, device=codes.device, dtype=torch.uint8)
    return pack(((codes.reshape(-1, 1) >> shifts) & 1).bool())


def unpack_codes(packed: torch.Tensor, bits: int, numel: int) -> torch.Tensor:
    flags = unpack(packed, numel * bits).view(numel, bits).to(torch.uint8)
    shifts = torch.arange(bits - 1, -1, -1, device=packed.device, dtype=torch.uint8)
    return (flags << shifts).sum(dim=1, dtype=torch.uint8)
