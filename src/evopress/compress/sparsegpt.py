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
    w = weight.float().clone()
    w[:, dead] = 0
    rows, cols = w.shape
    ws = w.unsqueeze(0).repeat(len(pruned), 1, 1)
    out = torch.zeros_like(ws)
    starts = list(range(0, cols, blocksize))
    widths = [min(blocksize, cols - s) for s in starts]
    per_block = [_split(p, widths) for p in pruned]  # per level, per column block
    for b, (start, width) in enumerate(zip(starts, widths)):
        end = start + width
        w1 = ws[:, :, start:end].clone()
        u1 = u[start:end, start:end]
        score = (w1 / torch.diagonal(u1)).square().reshape(len(pruned), -1)
        mask = torch.zeros_like(score, dtype=torch.bool)
        for level, counts in enumerate(per_block):
            if counts[b]:
                mask[level, torch.topk(score[level], counts[b], largest=False).indices] = True
        mask = mask.view(len(pruned), rows, width)
        err = torch.zeros_like(w1)
        for i in range(width):
            q = w1[:, :, i].masked_fill(mask[:, :, i], 0.0)
            out[:, :, start + i] = q
            e = (w1[:, :, i] - q) / u1[i, i]
            w1[:, :, i + 1:] -= e.unsqueeze(-1) * u1[i, i + 1:]
            err[:, :, i] = e
        ws[:, :, end:] -= err @ u[start:end, end:]
    return out


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
