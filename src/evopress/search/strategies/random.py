"""Random search: N feasible genomes per generation, keep the best seen (best-of-N baseline).

Also the EvoPress initialisation: the first parent is the best of `initially_generated` random
feasible genomes scored on a small token budget (reference `--initially_generated 64`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from evopress.search.budget import Budget, CostBudget
from evopress.search.space import Genome, Space
from evopress.search.strategies.base import State


@dataclass(frozen=True)
class RandomSearch:
    space: Space
    budget: Budget | CostBudget
    samples: int = 64
    max_tries: int = 100

    @property
    def name(self) -> str:
        return f"random(best-of-{self.samples})"

    def ask(self, state: State) -> list[Genome]:
        seen: set[Genome] = set()
        out: list[Genome] = []
        for _ in range(self.samples * self.max_tries):
            if len(out) == self.samples:
                break
            genome = self.budget.random_genome(self.space, state.rng)
            if genome not in seen:
                seen.add(genome)
                out.append(genome)
        return out

    def carry(self, state: State) -> list[Genome]:
        return [state.parent] if state.fitness < float("inf") else []

    def tell(self, state: State, genomes: list[Genome], fitness: list[float]) -> State:
        if genomes and fitness[0] <= state.fitness:
            state = replace(state, parent=genomes[0], fitness=fitness[0])
        return replace(state, generation=state.generation + 1)
