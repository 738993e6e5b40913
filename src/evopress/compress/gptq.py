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
from functools import partial

import torch

from evopress.compress.cudagraph import replay
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
                blocksize: int = 128, damp: float = 0.01, act_order: bool = False) -> list[Quantized]:
    """Every level in `formats`, in that order, by GPTQ: one sweep (and factor) per rotation size."""
    return gptq_layers([weight], hessian, formats, blocksize, damp, act_order)[0]


@torch.no_grad()
def gptq_layers(weights: list[torch.Tensor], hessian: torch.Tensor, formats: list[Format],
                blocksize: int = 128, damp: float = 0.01, act_order: bool = False) -> list[list[Quantized]]:
    """`gptq_levels` of layers that read the same inputs (q/k/v, gate/up), in one sweep: under one
    Hessian the rows are independent, so the layers run stacked along the rows and split after.
    `act_order`: columns in order of decreasing H_jj, the inputs that matter most rounded first,
    while the most freedom is left to absorb their error (GPTQ §4, with static groups)."""
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
        order = torch.argsort(torch.diagonal(h), descending=True, stable=True) if act_order else None
        u, _ = inverse_factor(h[order][:, order] if act_order else h, damp)
        levels = sweep(w, u, torch.diagonal(h) == 0, [formats[i] for i in idx], blocksize,
                       segments if len(weights) > 1 else None, order)
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
          blocksize: int = 128, segments: list[int] | None = None,
          order: torch.Tensor | None = None) -> list[Quantized]:
    """GPTQ's column sweep for every level at once (w float32, already rotated for these levels;
    `segments`: the row counts of layers stacked in w, for per-layer params). With `order`
    (act-order: u is then the factor of the permuted Hessian) the columns are visited in that
    order and every group's scales are fitted up front on w (static groups), so codes and params
    keep the original column order and every export reads them unchanged."""
    w = w.clone()
    w[:, dead] = 0
    rows, cols = w.shape
    blocksize = max([blocksize] + [f.group for f in formats])  # a group never straddles two blocks
    fams = families(formats)
    for _, _, group, _ in fams:
        if group and (blocksize % group or cols % group):
            raise ValueError(f"group size {group} must divide the block size {blocksize} and {cols} columns")
    ws = w.unsqueeze(0).repeat(len(formats), 1, 1)  # levels in family order
    tensor = [grid.prepare(w, segments) for grid, _, _, _ in fams]
    # fitted once on the whole weight: per-channel grids (as GPTQ without groups), and every group
    # under act-order ([levels, rows, groups] per param)
    static = [_fit_all(grid, ws[s], t, group) if not group or order is not None else None
              for (grid, s, group, _), t in zip(fams, tensor)]
    if order is not None:
        ws = ws[:, :, order]
        gidx = torch.stack([order // group if group else torch.zeros_like(order) for _, _, group, _ in fams])
    codes = torch.zeros(ws.shape, dtype=torch.uint8, device=w.device)
    fitted = [[] for _ in fams]
    for start in range(0, cols, blocksize):
        end = min(start + blocksize, cols)
        g1 = gidx[:, start:end] if order is not None else None
        key = ("gptq", tuple(formats), order is not None)
        c1, err, fits = replay(key, partial(_columns, fams), ws[:, :, start:end], u[start:end, start:end],
                               tensor, static, g1)
        codes[:, :, start:end] = c1
        for f, fit in enumerate(fits):
            fitted[f] += fit
        ws[:, :, end:] -= err @ u[start:end, end:]
    if order is not None:
        codes = codes[:, :, torch.argsort(order)]
    out: list[Quantized | None] = [None] * len(formats)
    for f, (grid, s, group, idx) in enumerate(fams):
        for j, level in enumerate(idx):
            if static[f] is not None:
                params = {k: v[j] for k, v in static[f].items()}
            else:
                params = {k: torch.stack([p[k][j] for p in fitted[f]], dim=-1) for k in fitted[f][0]}
            params = {k: stored_exact(grid, k, v) for k, v in {**tensor[f], **params}.items()}
            out[level] = Quantized(formats[level], codes[s.start + j], params)
    return out


def _fit_all(grid, ws: torch.Tensor, tensor: dict, group: int) -> dict:
    """A family's params fitted on the unchanged weight: per channel ([levels, rows]) or per group
    ([levels, rows, groups])."""
    if not group:
        return grid.fit(ws, tensor)
    fits = [grid.fit(ws[:, :, g:g + group], tensor) for g in range(0, ws.shape[-1], group)]
    return {k: torch.stack([f[k] for f in fits], dim=-1) for k in fits[0]}


def _columns(fams, w1: torch.Tensor, u1: torch.Tensor, tensor: list, static: list, gidx):
    """One block of columns of the sweep: each column rounded to every level's grid, its error
    taken out of the block's later columns. Returns the codes, the errors divided by U_ii (for the
    lazy update of the columns after the block) and the group params fitted here. No host sync, so
    it can run as a CUDA graph (`compress.cudagraph`)."""
    w1 = w1.clone()
    err = torch.zeros_like(w1)
    codes = torch.empty(w1.shape, dtype=torch.uint8, device=w1.device)
    current, fitted = [None] * len(fams), [[] for _ in fams]
    for i in range(w1.shape[-1]):
        q = torch.empty_like(w1[:, :, i])
        for f, (grid, s, group, _) in enumerate(fams):
            if static[f] is not None:
                current[f] = static[f] if not group else \
                    {k: v.index_select(-1, gidx[f, i:i + 1]).squeeze(-1) for k, v in static[f].items()}
            elif i % group == 0:
                current[f] = grid.fit(w1[s, :, i:i + group], tensor[f])
                fitted[f].append(current[f])
            p = {**tensor[f], **current[f]}
            c = grid.encode(w1[s, :, i], p)
            codes[s, :, i] = c
            q[s] = grid.decode(c, p)
        e = (w1[:, :, i] - q) / u1[i, i]
        w1[:, :, i + 1:] -= e.unsqueeze(-1) * u1[i, i + 1:]
        err[:, :, i] = e
    return codes, err, fitted


def stored_exact(grid, key: str, value: torch.Tensor) -> torch.Tensor:
    """A param in its stored dtype (`Grid.stored`); the values are exact in it by construction."""
    dtype, offset = grid.stored[key]
    return (value + offset).to(dtype)


def loaded(grid_kind: str, key: str, value: torch.Tensor) -> torch.Tensor:
    """The float32 param a stored one stands for."""
    dtype, offset = GRIDS[grid_kind].stored[key]
    return value.float() - offset
