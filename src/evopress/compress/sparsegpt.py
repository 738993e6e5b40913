"""Every sparsity level of one linear layer from one Hessian: SparseGPT, Wanda and magnitude.

SparseGPT (Frantar & Alistarh 2023; EvoPress §3.1, arXiv 2410.14649): with H = (2/N) Σ x xᵀ of
the layer's inputs, damped and inverted once, the upper Cholesky factor U of H⁻¹ drives an
optimal-brain-surgeon sweep over column blocks of 128. At the start of each block the weights
with the smallest w² / U_ii² in the whole (rows × 128) block are pruned, and each pruned
column's error is spread over the later columns. The sweep is the same for every level except
for the masks, so all levels run together as one batch of weight copies: one factorisation and
one pass over the columns for the whole grid.

Counts are exact: a level prunes exactly its number of weights, split over the column blocks by
rounding the running total, so the budget on kept weights holds exactly.

Wanda (Sun et al. 2023) prunes the smallest |w|·‖x_j‖ within each output row; magnitude prunes
the smallest |w| of the matrix. Neither updates the kept weights.
"""

from __future__ import annotations

import torch


def _split(total: int, sizes: list[int]) -> list[int]:
    """Split `total` over parts proportionally to `sizes`, exactly, by rounding the running sum."""
    whole, out, done, acc = sum(sizes), [], 0, 0
    for size in sizes:
        acc += size
        upto = (total * acc + whole // 2) // whole
        out.append(upto - done)
        done = upto
    return out


def inverse_factor(hessian: torch.Tensor, damp: float = 0.01) -> tuple[torch.Tensor, torch.Tensor]:
    """(U, dead): the upper Cholesky factor of the damped H⁻¹, and the input channels never seen."""
    h = hessian.double().clone()
    dead = torch.diagonal(h) == 0
    h[dead, dead] = 1.0
    h.diagonal().add_(damp * torch.diagonal(h).mean())
    hinv = torch.cholesky_inverse(torch.linalg.cholesky(h))
    return torch.linalg.cholesky(hinv, upper=True).float(), dead


@torch.no_grad()
def sparsegpt_levels(weight: torch.Tensor, hessian: torch.Tensor, pruned: list[int],
                     blocksize: int = 128, damp: float = 0.01) -> torch.Tensor:
    """[levels, rows, cols] float32 weights; level i has exactly `pruned[i]` zeros (plus dead columns)."""
    u, dead = inverse_factor(hessian, damp)
    return sweep(weight, u, dead, blocksize, pruned=pruned)


@torch.no_grad()
def sweep(weight: torch.Tensor, u: torch.Tensor, dead: torch.Tensor, blocksize: int = 128,
          pruned: list[int] | None = None, keep: torch.Tensor | None = None) -> torch.Tensor:
    """The column sweep for every level at once: masks chosen on the way (`pruned` counts per level)
    or given (`keep`, [levels, rows, cols] bool). Given the masks the sweep chose, it repeats the
    same arithmetic and so returns the same weights: a store keeps masks only (`evopress.database`)."""
    w = weight.float().clone()
    w[:, dead] = 0
    rows, cols = w.shape
    levels = len(pruned) if keep is None else keep.shape[0]
    ws = w.unsqueeze(0).repeat(levels, 1, 1)
    out = torch.zeros_like(ws)
    starts = list(range(0, cols, blocksize))
    widths = [min(blocksize, cols - s) for s in starts]
    per_block = None if keep is not None else [_split(p, widths) for p in pruned]  # per level, per block
    for b, (start, width) in enumerate(zip(starts, widths)):
        end = start + width
        w1 = ws[:, :, start:end].clone()
        u1 = u[start:end, start:end]
        if keep is not None:
            mask = ~keep[:, :, start:end]
        else:
            mask = _choose(w1, torch.diagonal(u1), [counts[b] for counts in per_block])
        err = torch.zeros_like(w1)
        for i in range(width):
            q = w1[:, :, i].masked_fill(mask[:, :, i], 0.0)
            out[:, :, start + i] = q
            e = (w1[:, :, i] - q) / u1[i, i]
            w1[:, :, i + 1:] -= e.unsqueeze(-1) * u1[i, i + 1:]
            err[:, :, i] = e
        ws[:, :, end:] -= err @ u[start:end, end:]
    return out


def _choose(w1: torch.Tensor, diag: torch.Tensor, counts: list[int]) -> torch.Tensor:
    """Per level, the `counts[level]` weights of the column block with the smallest w² / U_ii²."""
    levels, rows, width = w1.shape
    score = (w1 / diag).square().reshape(levels, -1)
    mask = torch.zeros_like(score, dtype=torch.bool)
    for level, count in enumerate(counts):
        if count:
            mask[level, torch.topk(score[level], count, largest=False).indices] = True
    return mask.view(levels, rows, width)


def _prune_by_score(weight: torch.Tensor, score: torch.Tensor, pruned: list[int], per_row: bool) -> torch.Tensor:
    """Zero the lowest-scored weights, level by level (masks are nested: one sort serves all)."""
    w = weight.float()
    rows, cols = w.shape
    flat = score if per_row else score.reshape(1, -1)
    rank = torch.empty_like(flat, dtype=torch.long)  # rank[r, j]: position of weight j in row r's order
    order = torch.argsort(flat, dim=1, stable=True)
    rank.scatter_(1, order, torch.arange(flat.shape[1], device=w.device).expand_as(order))
    out = []
    for count in pruned:
        keep_first = torch.tensor(_split(count, [flat.shape[1]] * flat.shape[0]), device=w.device)
        mask = (rank < keep_first.unsqueeze(1)).reshape(rows, cols)
        out.append(w.masked_fill(mask, 0.0))
    return torch.stack(out)


@torch.no_grad()
def magnitude_levels(weight: torch.Tensor, pruned: list[int]) -> torch.Tensor:
    return _prune_by_score(weight, weight.float().abs(), pruned, per_row=False)


@torch.no_grad()
def wanda_levels(weight: torch.Tensor, hessian: torch.Tensor, pruned: list[int]) -> torch.Tensor:
    """Wanda's metric |w_ij|·‖x_j‖, compared within each output row (‖x_j‖² ∝ H_jj)."""
    norms = torch.diagonal(hessian).float().clamp_min(0).sqrt()
    return _prune_by_score(weight, weight.float().abs() * norms, pruned, per_row=True)


@torch.no_grad()
def relative_errors(weight: torch.Tensor, levels: torch.Tensor, hessian: torch.Tensor) -> list[float]:
    """Per level tr(ΔW H ΔWᵀ) / tr(W H Wᵀ): the layer's relative output error (EvoPress §4.3)."""
    w = weight.float()
    h = hessian.float()
    base = ((w @ h) * w).sum().clamp_min(1e-30)
    delta = levels - w
    return [float(((d @ h) * d).sum() / base) for d in delta]


BUILDERS = ("sparsegpt", "wanda", "magnitude")


def prune_levels(method: str, weight: torch.Tensor, hessian: torch.Tensor, pruned: list[int],
                 blocksize: int = 128, damp: float = 0.01) -> torch.Tensor:
    if method == "sparsegpt":
        return sparsegpt_levels(weight, hessian, pruned, blocksize, damp)
    if method == "wanda":
        return wanda_levels(weight, hessian, pruned)
    if method == "magnitude":
        return magnitude_levels(weight, pruned)
    raise ValueError(f"unknown database method {method!r}; choose one of {', '.join(BUILDERS)}")


@torch.no_grad()
def levels_from_masks(method: str, weight: torch.Tensor, keep: torch.Tensor, factor=None,
                      blocksize: int = 128) -> torch.Tensor:
    """The weights of stored levels from their keep-masks ([levels, rows, cols] bool).

    SparseGPT repeats its sweep with the masks given (`factor` = (U, dead) of the build), which
    reproduces the built weights exactly; Wanda and magnitude keep the dense values.
    """
    if method == "sparsegpt":
        return sweep(weight, *factor, blocksize, keep=keep)
    if method in ("wanda", "magnitude"):
        return torch.where(keep, weight.float(), torch.zeros((), device=weight.device))
    raise ValueError(f"unknown database method {method!r}; choose one of {', '.join(BUILDERS)}")
