"""Exact budgets: a fixed sum of levels in every group of the space.

Because all units of a group share one cost table, fixing each group's level sum fixes the
total cost exactly; the level-switch mutation then never leaves the feasible set (EvoPress
§3, arXiv 2410.14649). For depth pruning at sublayer granularity the groups are "attn" and
"mlp", each with k dropped: the reference's separate budgets.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from evopress.errors import InfeasibleBudgetError
from evopress.search.space import Genome, Space


@dataclass(frozen=True)
class Budget:
    targets: tuple[tuple[str, int], ...]  # (group, level sum); a tuple of pairs keeps it hashable

    @classmethod
    def of(cls, **targets: int) -> "Budget":
        return cls(tuple(sorted(targets.items())))

    def target(self, group: str) -> int:
        return dict(self.targets)[group]

    def validate(self, space: Space) -> None:
        """Raise InfeasibleBudgetError unless every group's target is reachable."""
        groups = space.groups()
        wanted = dict(self.targets)
        if set(wanted) != set(groups):
            raise InfeasibleBudgetError(
                f"budget names groups {sorted(wanted)} but the space has groups {sorted(groups)}")
        for group, members in groups.items():
            top = sum(space.units[i].num_levels - 1 for i in members)
            if not 0 <= wanted[group] <= top:
                raise InfeasibleBudgetError(
                    f"group {group!r}: target level sum {wanted[group]} is outside 0..{top} "
                    f"({len(members)} units); choose a smaller target")

    def satisfied(self, space: Space, genome: Genome) -> bool:
        return all(sum(genome[i] for i in space.groups()[g]) == t for g, t in self.targets)

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
