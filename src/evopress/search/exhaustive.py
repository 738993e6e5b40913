"""Exhaustive search over every feasible genome, for spaces small enough to enumerate.

The ground truth the EvoPress paper uses to show the search finds the optimum (Fig. 1: all
8008 consecutive-pair configurations of Llama-3-8B, arXiv 2410.14649).
"""

from __future__ import annotations

import itertools
from functools import lru_cache
from typing import Callable, Iterator

from evopress.errors import InfeasibleBudgetError
from evopress.search.budget import Budget
from evopress.search.fidelity import Fidelity
from evopress.search.journal import Journal
from evopress.search.loop import Result, draw_key
from evopress.search.space import Genome, Space


def _group_levels(sizes: tuple[int, ...], total: int) -> Iterator[tuple[int, ...]]:
    """All level vectors for units with `sizes` levels whose entries sum to `total`."""
    if not sizes:
        if total == 0:
            yield ()
        return
    for first in range(min(sizes[0] - 1, total) + 1):
        for rest in _group_levels(sizes[1:], total - first):
            yield (first,) + rest


def count_feasible(space: Space, budget: Budget) -> int:
    """Number of feasible genomes, counted without enumerating them."""

    @lru_cache(maxsize=None)
    def ways(sizes: tuple[int, ...], total: int) -> int:
        if not sizes:
            return int(total == 0)
        return sum(ways(sizes[1:], total - x) for x in range(min(sizes[0] - 1, total) + 1))

    count = 1
    for group, members in space.groups().items():
        count *= ways(tuple(space.units[i].num_levels for i in members), budget.target(group))
    return count


def feasible_genomes(space: Space, budget: Budget) -> Iterator[Genome]:
    budget.validate(space)
    groups = list(space.groups().items())
    per_group = [list(_group_levels(tuple(space.units[i].num_levels for i in members), budget.target(g)))
                 for g, members in groups]
    for choice in itertools.product(*per_group):
        genome = [0] * len(space)
        for (_, members), levels in zip(groups, choice):
            for i, level in zip(members, levels):
                genome[i] = level
        yield tuple(genome)


def exhaustive(space: Space, budget: Budget, objective: Callable, tokens: int,
               limit: int = 100_000, chunk: int = 64, journal: Journal | None = None) -> Result:
    """Score every feasible genome on the same `tokens` tokens; raise if there are over `limit`."""
    n = count_feasible(space, budget)
    if n > limit:
        raise InfeasibleBudgetError(f"{n} feasible configurations exceed the exhaustive limit {limit}; "
                                    "use the evolutionary search instead")
    journal = journal or Journal(None, {"space": space.fingerprint(), "exhaustive": tokens})
    fidelity = Fidelity(tokens, draw_key("exhaustive", 0, 0))
    best, best_fit = None, float("inf")
    batch: list[Genome] = []
    genomes = feasible_genomes(space, budget)
    for genome in itertools.chain(genomes, [None]):
        if genome is not None:
            batch.append(genome)
        if batch and (genome is None or len(batch) == chunk):
            for g, f in zip(batch, journal.evaluate(objective, batch, fidelity, phase="exhaustive")):
                if f < best_fit:
                    best, best_fit = g, f
            batch = []
    return Result(best, best_fit, [{"evaluated": n}])
