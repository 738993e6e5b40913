"""The search space: units, their levels, and what each level costs.

A *unit* is one thing the search decides about (a sublayer, a block, a linear layer). Each unit
has discrete levels 0..m-1 with a cost per level in real units (parameters, bits, kept weights,
bytes); `base` is what every genome costs besides (a genome's cost is then a model's size).
Units sit in *groups*, which a level-sum budget uses (`evopress.search.budget`). A genome is a
tuple with one level per unit, in space order.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

Genome = tuple[int, ...]


@dataclass(frozen=True)
class Unit:
    name: str
    group: str
    levels: tuple[str, ...]
    costs: tuple[float, ...]

    def __post_init__(self):
        if len(self.levels) < 2:
            raise ValueError(f"unit {self.name!r} needs at least two levels, has {len(self.levels)}")
        if len(self.costs) != len(self.levels):
            raise ValueError(f"unit {self.name!r}: {len(self.levels)} levels but {len(self.costs)} costs")

    @property
    def num_levels(self) -> int:
        return len(self.levels)


@dataclass(frozen=True)
class Space:
    units: tuple[Unit, ...]
    base: float = 0.0  # what every genome costs besides its units (embeddings, norms, head ...)

    def __post_init__(self):
        names = [u.name for u in self.units]
        if len(set(names)) != len(names):
            raise ValueError("unit names must be unique")

    def __len__(self) -> int:
        return len(self.units)

    def groups(self) -> dict[str, tuple[int, ...]]:
        """Group name -> indices of its units, in space order."""
        out: dict[str, list[int]] = {}
        for i, unit in enumerate(self.units):
            out.setdefault(unit.group, []).append(i)
        return {g: tuple(ix) for g, ix in out.items()}

    def cost(self, genome: Genome) -> float:
        self.check(genome)
        return self.base + sum(u.costs[level] for u, level in zip(self.units, genome))

    def check(self, genome: Genome) -> None:
        if len(genome) != len(self.units):
            raise ValueError(f"genome has {len(genome)} entries, space has {len(self.units)} units")
        for unit, level in zip(self.units, genome):
            if not 0 <= level < unit.num_levels:
                raise ValueError(f"level {level} out of range for unit {unit.name!r}")

    def max_step(self) -> float:
        """The largest cost change of a one-level move of any unit."""
        return max(abs(b - a) for u in self.units for a, b in zip(u.costs, u.costs[1:]))

    def describe(self, genome: Genome) -> dict[str, str]:
        return {u.name: u.levels[level] for u, level in zip(self.units, genome)}

    def fingerprint(self) -> str:
        """Stable hash of the space, stored in journals so a run never resumes on another space."""
        units = [[u.name, u.group, list(u.levels), list(u.costs)] for u in self.units]
        blob = json.dumps(units + [["base", self.base]] if self.base else units)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]
