"""Level-switch mutation: one unit up a level, another of the same group down (EvoPress §3).

The number of switches per offspring is min(U1, U2) with U1, U2 ~ Uniform{1..M}, M = 3 by
default, biased to small moves: P(1)=5/9, P(2)=3/9, P(3)=1/9 (reference `evo_drop_search`).
The ablation in EvoPress §5 finds small mutations best.
"""

from __future__ import annotations

import numpy as np

from evopress.search.space import Genome, Space


def num_switches(rng: np.random.Generator, max_switches: int = 3) -> int:
    return int(min(rng.integers(1, max_switches + 1), rng.integers(1, max_switches + 1)))


def level_switch(space: Space, genome: Genome, rng: np.random.Generator, switches: int) -> Genome:
    """Apply `switches` budget-preserving switches; a group that cannot switch is skipped.

    Each switch picks a group with probability proportional to its size, then uniformly a unit
    that can go up and one that can go down. Both may be the same unit (a no-op), as in the
    reference; duplicates are rejected by the strategy.
    """
    out = list(genome)
    groups = list(space.groups().values())
    sizes = np.array([len(g) for g in groups], dtype=float)
    for _ in range(switches):
        members = groups[rng.choice(len(groups), p=sizes / sizes.sum())]
        up = [i for i in members if out[i] < space.units[i].num_levels - 1]
        down = [i for i in members if out[i] > 0]
        if not up or not down:
            continue
        out[up[rng.integers(len(up))]] += 1
        out[down[rng.integers(len(down))]] -= 1
    return tuple(out)
