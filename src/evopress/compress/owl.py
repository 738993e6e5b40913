"""OWL: outlier-weighted layerwise sparsity (Yin et al. 2024; EvoPress §4.2, arXiv 2410.14649).

For each decoder block, the Wanda metric A = |W| · ‖x_j‖ over all its prunable weights gives the
layerwise outlier density LOD = fraction of entries with A > M · mean(A). Blocks with more
outliers are pruned less: s_l = S − r_l + mean(r), with r the LODs rescaled to [0, 2λ], so the
block sparsities lie within S ± 2λ and average S. The reference leaves the choice of (λ, M) to
the user; evopress scores every grid point on calibration data and keeps the best.
"""

from __future__ import annotations

import torch

LAMBDAS = (0.02, 0.05, 0.08, 0.1, 0.2)
MS = (3.0, 5.0, 7.0, 10.0)


@torch.no_grad()
def outlier_density(weights: list[torch.Tensor], act_sq: list[torch.Tensor], m: float) -> float:
    """LOD of one block: share of Wanda scores above m × their mean."""
    scores = torch.cat([(w.float().abs() * a.float().clamp_min(0).sqrt()).flatten()
                        for w, a in zip(weights, act_sq)])
    return float((scores > m * scores.mean()).float().mean())


def block_sparsities(lod: list[float], target: float, lam: float) -> list[float]:
    lo, hi = min(lod), max(lod)
    if hi == lo:
        return [target] * len(lod)
    r = [2 * lam * (x - lo) / (hi - lo) for x in lod]
    mean = sum(r) / len(r)
    return [target - x + mean for x in r]
