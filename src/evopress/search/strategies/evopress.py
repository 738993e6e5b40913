"""EvoPress: a (1+λ) evolutionary algorithm with level-switch mutation (arXiv 2410.14649, Alg. 1).

One parent; λ distinct offspring per generation, each a few budget-preserving level switches
away from it (the budget's own mutation keeps it feasible); offspring equal to the parent are rejected. With `elitist=True` the parent
re-enters the last selection stage and is re-scored on that stage's fresh tokens, so it is
replaced only by an offspring that beats it on the same data: the (1+λ) scheme. With
`elitist=False` it is the (1,λ) scheme, which always moves to the best offspring.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from evopress.search.budget import Budget, CostBudget
from evopress.search.mutation import num_switches
from evopress.search.space import Genome, Space
from evopress.search.strategies.base import State


@dataclass(frozen=True)
class EvoPress:
    space: Space
    budget: Budget | CostBudget
    offspring: int = 32
    max_switches: int = 3
    elitist: bool = True
    max_tries_per_child: int = 100  # bounds the rejection loop when the space is nearly exhausted

    @property
    def name(self) -> str:
        return f"evopress(1{'+' if self.elitist else ','}{self.offspring})"

    def ask(self, state: State) -> list[Genome]:
        seen = {state.parent}
        children: list[Genome] = []
        for _ in range(self.offspring * self.max_tries_per_child):
            if len(children) == self.offspring:
                break
            k = num_switches(state.rng, self.max_switches)
            child = self.budget.mutate(self.space, state.parent, state.rng, k)
            if child not in seen:
                seen.add(child)
                children.append(child)
        return children

    def carry(self, state: State) -> list[Genome]:
        return [state.parent] if self.elitist else []

    def tell(self, state: State, genomes: list[Genome], fitness: list[float]) -> State:
        if not genomes:
            return replace(state, generation=state.generation + 1)
        return replace(state, parent=genomes[0], fitness=fitness[0], generation=state.generation + 1)
