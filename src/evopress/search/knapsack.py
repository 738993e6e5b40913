"""Per-unit error knapsack: the additive baseline to an end-to-end search (SPDY-style DP).

Given an error estimate e[u][level] per unit (e.g. the layer's relative reconstruction error,
EvoPress §4.3, arXiv 2410.14649) minimise Σ e subject to Σ cost ≤ budget by dynamic programming
over discretised costs. Costs are rounded *up* to the grid, so the answer always meets the real
budget; the grid is fine enough that the rounding wastes at most `slack` of it (integer costs,
such as kept-weight counts, are exact when they span fewer than `max_states` values). Unlike the
reference (integer average level, unweighted bits) this takes any weighted cost.
"""

from __future__ import annotations

import math

import numpy as np

from evopress.errors import InfeasibleBudgetError
from evopress.search.space import Genome, Space


def knapsack(space: Space, errors: list[list[float]], high: float, slack: float,
             max_states: int = 1_000_000) -> Genome:
    """The genome minimising the summed errors with total cost ≤ `high`."""
    n = len(space)
    floor = space.base + sum(min(u.costs) for u in space.units)
    # Spend on the part above the cheapest profile: resolution so that n round-ups lose ≤ slack.
    room = high - floor
    if room < 0:
        raise InfeasibleBudgetError(f"budget {high:g} is below the cheapest profile {floor:g}")
    step = max(slack / max(n, 1), room / max_states, 1e-12)
    if all(float(c).is_integer() for u in space.units for c in u.costs):
        step = max(1, math.ceil(room / max_states), math.floor(slack / max(n, 1)))  # integer costs: exact at step 1
    size = int(math.floor(room / step)) + 1
    best = np.zeros(size)  # best[c]: least error of the units so far using ≤ c grid steps above their minimum
    choice = np.zeros((n, size), dtype=np.int16)
    for u, unit in enumerate(space.units):
        base = min(unit.costs)
        new = np.full(size, np.inf)
        for level, cost in enumerate(unit.costs):
            shift = int(math.ceil((cost - base) / step - 1e-9))
            if shift >= size:
                continue
            cand = np.full(size, np.inf)
            cand[shift:] = best[:size - shift] + errors[u][level]
            better = cand < new
            new[better] = cand[better]
            choice[u][better] = level
        best = new
    c = int(np.argmin(best))
    if not np.isfinite(best[c]):
        raise InfeasibleBudgetError("no profile meets the budget")
    genome = [0] * n
    for u in range(n - 1, -1, -1):
        level = int(choice[u][c])
        genome[u] = level
        base = min(space.units[u].costs)
        c -= int(math.ceil((space.units[u].costs[level] - base) / step - 1e-9))
    return tuple(genome)
