"""Exact budgets, and the budget-preserving mutation that belongs to each kind.

`Budget` fixes the sum of levels in every group. When all units of a group share one cost table
this fixes the total cost exactly, and the level-switch mutation never leaves the feasible set
(EvoPress §3, arXiv 2410.14649). For depth pruning the groups are "attn" and "mlp", each with k
dropped: the reference's separate budgets.

`CostBudget` is the general weighted budget: the total cost (e.g. kept weights, with a different
cost per level and unit) must lie in a band [low, high]. A level switch between units of different
sizes moves the total, so it is followed by a repair walk of single-level moves back into the
band. With a band at least as wide as the largest single-level step, a move from outside the band
never jumps over it, so the repair always ends inside (EvoPress §7 asks for such a
knapsack-aware mutation instead of equal-size level steps).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from evopress.errors import InfeasibleBudgetError
from evopress.search.mutation import level_switch
from evopress.search.space import Genome, Space


@dataclass(frozen=True)
class Budget:
    targets: tuple[tuple[str, int], ...]  # (group, level sum); a tuple of pairs keeps it hashable

    @classmethod
    def of(cls, **targets: int) -> "Budget":
        return cls(tuple(sorted(targets.items())))

    def target(self, group: str) -> int:
        return dict(self.targets)[group]

    def describe(self) -> list:
        return [list(t) for t in self.targets]

    def validate(self, space: Space) -> None:
        """Raise InfeasibleBudgetError unless every group's target is reachable."""
        groups = space.groups()
        wanted = dict(self.targets)
        if set(wanted) != set(groups):
            raise InfeasibleBudgetError(
                f"budget names groups {sorted(wanted)} but the space has groups {sorted(groups)}")
        for group, members in groups.items():
            if len({space.units[i].costs for i in members}) != 1:
                raise InfeasibleBudgetError(
                    f"group {group!r} mixes cost tables, so a level sum does not fix its cost; "
                    "use a CostBudget")
            top = sum(space.units[i].num_levels - 1 for i in members)
            if not 0 <= wanted[group] <= top:
                raise InfeasibleBudgetError(
                    f"group {group!r}: target level sum {wanted[group]} is outside 0..{top} "
                    f"({len(members)} units); choose a smaller target")

    def satisfied(self, space: Space, genome: Genome) -> bool:
        return all(sum(genome[i] for i in space.groups()[g]) == t for g, t in self.targets)

    def mutate(self, space: Space, genome: Genome, rng: np.random.Generator, switches: int) -> Genome:
        return level_switch(space, genome, rng, switches)

    def random_genome(self, space: Space, rng: np.random.Generator) -> Genome:
        """A uniformly random feasible genome for binary levels (a random k-subset per group).

        Levels are raised one step at a time on a random unit that can still rise; for
        two-level units this samples subsets uniformly, the reference's initialisation.
        """
        self.validate(space)
        genome = [0] * len(space)
        for group, members in space.groups().items():
            for _ in range(self.target(group)):
                free = [i for i in members if genome[i] < space.units[i].num_levels - 1]
                genome[free[rng.integers(len(free))]] += 1
        return tuple(genome)


@dataclass(frozen=True)
class CostBudget:
    """Total cost within [low, high]; groups are ignored."""

    low: float
    high: float

    def describe(self) -> list:
        return ["cost", self.low, self.high]

    def validate(self, space: Space) -> None:
        lo = space.base + sum(min(u.costs) for u in space.units)
        hi = space.base + sum(max(u.costs) for u in space.units)
        if self.high < lo or self.low > hi:
            raise InfeasibleBudgetError(
                f"cost band [{self.low:g}, {self.high:g}] is outside what the space can reach "
                f"[{lo:g}, {hi:g}]; choose a target inside the database's levels")
        if self.high - self.low < space.max_step():
            raise InfeasibleBudgetError(
                f"cost band width {self.high - self.low:g} is below the largest level step "
                f"{space.max_step():g}; widen the band or use finer levels")

    def satisfied(self, space: Space, genome: Genome) -> bool:
        return self.low <= space.cost(genome) <= self.high

    def mutate(self, space: Space, genome: Genome, rng: np.random.Generator, switches: int) -> Genome:
        """Level switches between any two units (one up, one down), then a repair into the band."""
        out = list(genome)
        n = len(space)
        for _ in range(switches):
            up = [i for i in range(n) if out[i] < space.units[i].num_levels - 1]
            down = [i for i in range(n) if out[i] > 0]
            if up and down:
                out[up[rng.integers(len(up))]] += 1
                out[down[rng.integers(len(down))]] -= 1
        return self.repair(space, out, rng)

    def repair(self, space: Space, genome, rng: np.random.Generator) -> Genome:
        """Single-level moves on random units, each towards the band, until the cost is inside."""
        out = list(genome)
        cost = space.cost(out)
        while not self.low <= cost <= self.high:
            sign = -1.0 if cost > self.high else 1.0
            moves = [(i, d) for i, u in enumerate(space.units) for d in (-1, 1)
                     if 0 <= out[i] + d < u.num_levels and sign * (u.costs[out[i] + d] - u.costs[out[i]]) > 0]
            if not moves:
                raise InfeasibleBudgetError("no single-level move brings the cost back into the band")
            i, d = moves[rng.integers(len(moves))]
            cost += space.units[i].costs[out[i] + d] - space.units[i].costs[out[i]]
            out[i] += d
        return tuple(out)

    def random_genome(self, space: Space, rng: np.random.Generator) -> Genome:
        """A random feasible genome: random levels everywhere, repaired into the band."""
        self.validate(space)
        start = [int(rng.integers(u.num_levels)) for u in space.units]
        return self.repair(space, start, rng)


def band_below(target: float, space: Space) -> CostBudget:
    """The narrowest always-repairable band with `target` as its top: [target - max step, target]."""
    step = space.max_step()
    return CostBudget(low=math.floor(target - step), high=target)
