"""The strategy interface: ask for candidates, tell the selected survivors (evosax/optuna style).

A strategy never sees how fitness is computed. The loop asks for candidates, runs them through
multi-stage selection, and tells the strategy the survivors of the last stage with their
fitness. Lower fitness is better.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from evopress.search.space import Genome


@dataclass(frozen=True)
class State:
    parent: Genome
    fitness: float = float("inf")
    generation: int = 0
    rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(0), compare=False)


class Strategy(Protocol):
    name: str

    def ask(self, state: State) -> list[Genome]:
        """New candidates for this generation (distinct; may be fewer when the space runs out)."""

    def carry(self, state: State) -> list[Genome]:
        """Genomes that re-enter the last selection stage (the parent, for elitist strategies)."""

    def tell(self, state: State, genomes: list[Genome], fitness: list[float]) -> State:
        """The next state from the last stage's survivors, best first."""
