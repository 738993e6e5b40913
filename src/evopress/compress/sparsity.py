"""Unstructured sparsity as a search space: a grid of sparsity levels per linear layer.

EvoPress (§2.1, arXiv 2410.14649) searches one sparsity level per linear layer under a global
budget on zeros. The reference's levels are offsets of a fixed 1M weights, so small matrices
(k/v) get 4–5 coarse levels of ±24%; here levels are a grid of sparsities, finer for small
matrices, and each level's cost is its exact count of kept weights. The budget is then a band
on total kept weights (`evopress.search.CostBudget`), so the average sparsity over all prunable
weights holds exactly, whatever the layer sizes. This module imports no torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from evopress.errors import InfeasibleBudgetError
from evopress.search import CostBudget, Genome, Space, Unit, band_below


@dataclass(frozen=True)
class SparsityGrid:
    low: float = 0.4
    high: float = 0.9
    step: float = 0.025
    small_step: float = 0.0125  # for matrices with fewer than small_fraction × the largest's weights
    small_fraction: float = 0.5

    def __post_init__(self):
        if not 0 <= self.low < self.high < 1:
            raise InfeasibleBudgetError(f"sparsity grid [{self.low}, {self.high}] must satisfy 0 <= low < high < 1")
        if self.step <= 0 or self.small_step <= 0:
            raise InfeasibleBudgetError("sparsity grid steps must be positive")

    def levels(self, numel: int, largest: int) -> tuple[float, ...]:
        step = self.small_step if numel < self.small_fraction * largest else self.step
        count = int(round((self.high - self.low) / step))
        return tuple(round(min(self.low + i * step, self.high), 6) for i in range(count + 1))

    def around(self, *targets: float, width: float = 0.2) -> "SparsityGrid":
        """A grid covering the targets with `width` room on each side (clipped to [0, 0.95])."""
        low = max(0.0, round(min(targets) - width, 6))
        high = min(0.95, round(max(targets) + width, 6))
        return SparsityGrid(low, high, self.step, self.small_step, self.small_fraction)


def pruned_count(numel: int, sparsity: float) -> int:
    return int(round(sparsity * numel))


@dataclass(frozen=True)
class Matrix:
    """A prunable linear layer: full name, decoder block, and [out, in] shape."""

    name: str
    block: int
    shape: tuple[int, int]

    @property
    def numel(self) -> int:
        return self.shape[0] * self.shape[1]


def unit_table(matrices: list[Matrix], grid: SparsityGrid) -> list[dict]:
    """Per matrix its levels and exact pruned counts: what a database stores and a search uses."""
    largest = max(m.numel for m in matrices)
    out = []
    for m in matrices:
        levels = grid.levels(m.numel, largest)
        out.append({"name": m.name, "block": m.block, "shape": list(m.shape), "levels": list(levels),
                    "pruned": [pruned_count(m.numel, s) for s in levels]})
    return out


def sparsity_space(table: list[dict]) -> Space:
    """One unit per matrix; level i = its i-th sparsity; cost = kept weights (exact)."""
    units = []
    for u in table:
        numel = u["shape"][0] * u["shape"][1]
        units.append(Unit(u["name"], f"block{u['block']}", tuple(f"{s:.4f}" for s in u["levels"]),
                          tuple(float(numel - p) for p in u["pruned"])))
    return Space(tuple(units))


def numels(table: list[dict]) -> list[int]:
    return [u["shape"][0] * u["shape"][1] for u in table]


def level_sparsities(space: Space) -> list[list[float]]:
    return [[float(x) for x in u.levels] for u in space.units]


def sparsity_budget(space: Space, numels: list[int], target: float) -> CostBudget:
    """Kept weights at most what a uniform `target` keeps, at least that minus the largest level step."""
    lows = [float(u.levels[0]) for u in space.units]
    highs = [float(u.levels[-1]) for u in space.units]
    if not max(lows) <= target <= min(highs):
        raise InfeasibleBudgetError(
            f"target sparsity {target:.3f} is outside the database's levels "
            f"[{max(lows):.3f}, {min(highs):.3f}]; rebuild the database with a grid that covers it")
    kept = sum(n - pruned_count(n, target) for n in numels)
    return band_below(float(kept), space)


def nearest_genome(space: Space, sparsities: list[float]) -> Genome:
    """Per unit, the level whose sparsity is nearest the requested one."""
    return tuple(min(range(u.num_levels), key=lambda i, u=u, s=s: abs(float(u.levels[i]) - s))
                 for u, s in zip(space.units, sparsities))


def uniform_genome(space: Space, budget: CostBudget, target: float, rng) -> Genome:
    """The uniform profile; if the target is off some unit's grid, repaired into the band."""
    genome = nearest_genome(space, [target] * len(space))
    return genome if budget.satisfied(space, genome) else budget.repair(space, genome, rng)


def overall_sparsity(space: Space, genome: Genome, numels: list[int]) -> float:
    return 1.0 - space.cost(genome) / sum(numels)


def profile(space: Space, genome: Genome) -> dict[str, float]:
    """Unit name -> its chosen sparsity."""
    return {u.name: float(u.levels[level]) for u, level in zip(space.units, genome)}
