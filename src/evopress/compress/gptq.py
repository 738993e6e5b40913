"""Every quantization level of one linear layer from one Hessian: GPTQ, and round-to-nearest.

GPTQ (Frantar et al. 2022, arXiv 2210.17323; EvoPress §3.2, arXiv 2410.14649): with H = (2/N) Σ x xᵀ
of the layer's inputs, damped and inverted once, the upper Cholesky factor U of H⁻¹ drives a sweep
over the columns: each column is rounded to its level's grid, and its error, divided by U_ii, is
taken out of the columns still to come (lazily, in blocks of 128). A group's scales are fitted
when the sweep reaches its first column, on the weights as the earlier errors left them (the
reference's dynamic groups). Only the rounding differs between levels, so all levels of a layer
run as one batch of weight copies through one sweep, one factorisation for the whole grid, as
SparseGPT's levels do (`compress.sparsegpt`). Levels of one family (integers of every width with
one group size, say) round in one vector operation per column.

A rotated level ("mxfp4+h32") is GPTQ on W·Bᵀ with the Hessian of the rotated inputs B H Bᵀ, one
more factorisation per rotation size. Its values are rotated back, so every level is a plain
weight of the original layer.

Each level comes back as codes and params (`compress.formats`), and `dequantize` turns them into
values: the sweep uses the very same function for its error feedback, so a store that keeps codes
and params reloads exactly the weights the sweep produced.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import torch

from evopress.compress.formats import GRIDS, Format, rotate
from evopress.compress.sparsegpt import inverse_factor


@dataclass
class Quantized:
    """One level of a layer: codes [rows, cols] (uint8, rotated basis), params per group
    ([rows, groups], or [rows] per channel) and per tensor (scalars)."""

    format: Format
    codes: torch.Tensor | None
    params: dict


def expand(value: torch.Tensor, group: int, cols: int) -> torch.Tensor:
    """A per-group (or per-channel, or per-tensor) param broadcast to [rows, cols]."""
    if value.dim() == 0:
        return value
    if value.dim() == 1:
        return value.unsqueeze(-1)
    return value.repeat_interleave(group, dim=-1)[..., :cols]


def dequantize(level: Quantized, dense: torch.Tensor) -> torch.Tensor:
    """The level's float32 weight in the original basis (bf16: the dense weight itself)."""
    fmt = level.format
    if fmt.kind == "bf16":
        return dense.float()
    cols = level.codes.shape[-1]
    params = {k: expand(loaded(fmt.kind, k, v), fmt.group, cols) for k, v in level.params.items()}
    values = GRIDS[fmt.kind]([fmt]).decode(level.codes, params)
    return rotate(values, fmt.rotation) if fmt.rotation else values


def rotated_hessian(hessian: torch.Tensor, size: int) -> torch.Tensor:
    """B H Bᵀ: the Hessian of the inputs B x (B symmetric, so two rotations of the columns)."""
    return rotate(rotate(hessian, size).T.contiguous(), size)


@torch.no_grad()
def gptq_levels(weight: torch.Tensor, hessian: torch.Tensor, formats: list[Format],
                blocksize: int = 128, damp: float = 0.01) -> list[Quantized]:
    """Every level in `formats`, in that order, by GPTQ: one sweep (and factor) per rotation size."""
    return gptq_layers([weight], hessian, formats, blocksize, damp)[0]


@torch.no_grad()
def gptq_layers(weights: list[torch.Tensor], hessian: torch.Tensor, formats: list[Format],
                blocksize: int = 128, damp: float = 0.01) -> list[list[Quantized]]:
    """`gptq_levels` of layers that read the same inputs (q/k/v, gate/up), in one sweep: under one
    Hessian the rows are independent, so the layers run stacked along the rows and split after."""
    segments = [w.shape[0] for w in weights]
    stacked = torch.cat([w.float() for w in weights]) if len(weights) > 1 else weights[0].float()
    out: list[Quantized | None] = [None] * len(formats)
    by_rotation = defaultdict(list)
    for i, fmt in enumerate(formats):
        if fmt.kind == "bf16":
            out[i] = Quantized(fmt, None, {})
        else:
            by_rotation[fmt.rotation].append(i)
    for size, idx in sorted(by_rotation.items()):
        w = rotate(stacked, size) if size else stacked
        h = rotated_hessian(hessian.float(), size) if size else hessian
        u, dead = inverse_factor(h, damp)
        levels = sweep(w, u, dead, [formats[i] for i in idx], blocksize, segments if len(weights) > 1 else None)
        for i, level in zip(idx, levels):
            out[i] = level
    return [[split(level, segments, j) for level in out] for j in range(len(weights))]


def split(level: Quantized, segments: list[int], j: int) -> Quantized:
    """Layer j's rows of a level computed on stacked layers (per-layer params back to scalars)."""
    if len(segments) == 1 or level.codes is None:
        return level
    rows = slice(sum(segments[:j]), sum(segments[:j + 1]))
    params = {k: v[rows][0] if k == "global" else v[rows] for k, v in level.params.items()}
    return Quantized(level.format, level.codes[rows], params)


@torch.no_grad()
def rtn_levels(weight: torch.Tensor, formats: list[Format]) -> list[Quantized]:
    """Round-to-nearest: the same grids and scales with no error feedback (U = I)."""
    out = []
    for fmt in formats:
        if fmt.kind == "bf16":
            out.append(Quantized(fmt, None, {}))
            continue
        w = rotate(weight.float(), fmt.rotation) if fmt.rotation else weight.float()
        eye = torch.eye(w.shape[1], device=w.device)
        dead = torch.zeros(w.shape[1], dtype=torch.bool, device=w.device)
        out += sweep(w, eye, dead, [fmt], max(128, fmt.group))
    return out


def families(formats: list[Format]) -> list[tuple]:
    """(grid, slice, group, level indices) per family: levels that round in one vector operation,
    each family a contiguous slice of the sweep's order (views, not gathers, in the column loop)."""
    keys = defaultdict(list)
    for i, fmt in enumerate(formats):
        keys[(fmt.kind, fmt.group, fmt.symmetric)].append(i)
    out, start = [], 0
    for (kind, group, _), idx in keys.items():
        out.append((GRIDS[kind]([formats[i] for i in idx]), slice(start, start + len(idx)), group, idx))
        start += len(idx)
    return out


@torch.no_grad()
def sweep(w: torch.Tensor, u: torch.Tensor, dead: torch.Tensor, formats: list[Format],
          blocksize: int = 128, segments: list[int] | None = None) -> list[Quantized]:
    """GPTQ's column sweep for every level at once (w float32, already rotated for these levels;
    `segments`: the row counts of layers stacked in w, for per-layer params)."""
    w = w.clone()
    w[:, dead] = 0
    rows, cols = w.shape
    blocksize = max([blocksize] + [f.group for f in formats])  # a group never straddles two blocks
    fams = families(formats)
    for _, _, group, _ in fams:
        if group and (blocksize % group or cols % group):
            raise ValueError(f"group size {group} must divide the block size {blocksize} and {cols} columns")
    ws = w.unsqueeze(0).repeat(len(formats), 1, 1)  # levels in family order
    codes = torch.zeros(ws.shape, dtype=torch.uint8, device=w.device)
    tensor = [grid.prepare(w, segments) for grid, _, _, _ in fams]
    # per-channel grids fit once, on the whole weight (as GPTQ without groups does)
    current = [grid.fit(ws[s], t) if not group else None for (grid, s, group, _), t in zip(fams, tensor)]
    fitted = [[] for _ in fams]
    for start in range(0, cols, blocksize):
        end = min(start + blocksize, cols)
        w1, u1 = ws[:, :, start:end].clone(), u[start:end, start:end]
        err = torch.zeros_like(w1)
        for i in range(end - start):
            q = torch.empty_like(w1[:, :, i])
            for f, (grid, s, group, _) in enumerate(fams):
                if group and (start + i) % group == 0:
                    current[f] = grid.fit(w1[s, :, i:i + group], tensor[f])
                    fitted[f].append(current[f])
                p = {**tensor[f], **current[f]}
                c = grid.encode(w1[s, :, i], p)
                codes[s, :, start + i] = c
                q[s] = grid.decode(c, p)
            e = (w1[:, :, i] - q) / u1[i, i]
            w1[:, :, i + 1:] -= e.unsqueeze(-1) * u1[i, i + 1:]
            err[:, :, i] = e
        ws[:, :, end:] -= err @ u[start:end, end:]
    out: list[Quantized | None] = [None] * len(formats)
    for f, (grid, s, group, idx) in enumerate(fams):
        per_group = fitted[f] if group else [current[f]]
        for j, level in enumerate(idx):
            params = {k: torch.stack([p[k][j] for p in per_group], dim=-1) if group else per_group[0][k][j]
                      for k in per_group[0]}
            params = {k: stored_exact(grid, k, v) for k, v in {**tensor[f], **params}.items()}
            out[level] = Quantized(formats[level], codes[s.start + j], params)
    return out


def stored_exact(grid, key: str, value: torch.Tensor) -> torch.Tensor:
    """A param in its stored dtype (`Grid.stored`); the values are exact in it by construction."""
    dtype, offset = grid.stored[key]
    return (value + offset).to(dtype)


def loaded(grid_kind: str, key: str, value: torch.Tensor) -> torch.Tensor:
    """The float32 param a stored one stands for."""
    dtype, offset = GRIDS[grid_kind].stored[key]
    return value.float() - offset
