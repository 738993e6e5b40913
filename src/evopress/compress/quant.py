"""Quantization as a search space: one format per linear layer, each costing its exact bits.

EvoPress (§2.1-2.3, §3.2, arXiv 2410.14649) searches one bit-width per linear layer. The reference
counts `numel × bits` only; here a level costs what its layout stores (codes, scales, zeros,
per-tensor scales: `Format.size`, or the export layout's bytes), so "3.0 bits per weight" is the
real size. Levels are sorted by cost, and the budget is a band on the total bits
(`evopress.search.CostBudget`), whatever the layer sizes.

A random genome is drawn as the reference draws its initial candidates and its "best of 32"
baseline (§2.3): every layer at the cheapest level whose uniform profile is over the budget,
then one random layer after another one level down until the total fits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from evopress.compress.sparsity import Matrix
from evopress.errors import InfeasibleBudgetError, RecipeError
from evopress.search import CostBudget, Genome, Space, Unit, band_below

# What each export target can carry (and what the search then chooses from by default).
DEFAULT_LEVELS = {
    "gptq": ("int2", "int3", "int4", "int8", "bf16"),
    "compressed-tensors": ("int2", "int3", "int4", "int5", "int6", "int8", "mxfp4", "nvfp4", "bf16"),
    "hf": ("int2", "int3", "int4", "int5", "int6", "int8", "bf16"),
}


def unit_table(matrices: list[Matrix], levels: list[str], size: Callable[[str, int, int], int],
               rank: Callable[[str, int, int], int] | None = None) -> list[dict]:
    """Per matrix its levels, cheapest first by `rank` (default: `size`), and their exact sizes in
    bits (`size(level, rows, cols)`). Ordering by a layout-free size keeps one store's level order
    whatever layout the costs are counted in."""
    rank = rank or size
    out = []
    for m in matrices:
        rows, cols = m.shape
        bits = {name: size(name, rows, cols) for name in levels}
        order = sorted(levels, key=lambda name: (rank(name, rows, cols), levels.index(name)))
        out.append({"name": m.name, "block": m.block, "shape": [rows, cols], "levels": order,
                    "bits": [bits[name] for name in order]})
    return out


def quant_space(table: list[dict]) -> Space:
    """One unit per matrix; level i = its i-th format; cost = its bits (exact)."""
    return Space(tuple(Unit(u["name"], f"block{u['block']}", tuple(u["levels"]), tuple(float(b) for b in u["bits"]))
                       for u in table))


@dataclass(frozen=True)
class QuantBudget(CostBudget):
    """The bits band, with the reference's way of drawing random genomes (see the module docstring)."""

    def random_genome(self, space: Space, rng: np.random.Generator) -> Genome:
        self.validate(space)
        top = max(u.num_levels for u in space.units)
        start = next((lv for lv in range(top) if space.cost([min(lv, u.num_levels - 1) for u in space.units])
                      > self.high), top - 1)
        genome = [min(start, u.num_levels - 1) for u in space.units]
        while space.cost(genome) > self.high:
            down = [i for i, g in enumerate(genome) if g > 0]
            genome[down[rng.integers(len(down))]] -= 1
        return self.repair(space, genome, rng)


def bits_budget(space: Space, numels: list[int], bits_per_weight: float) -> QuantBudget:
    """Total bits at most `bits_per_weight` × the quantized weights, at least that minus the largest step."""
    lo = sum(min(u.costs) for u in space.units) / sum(numels)
    hi = sum(max(u.costs) for u in space.units) / sum(numels)
    if not lo <= bits_per_weight <= hi:
        raise InfeasibleBudgetError(f"{bits_per_weight} bits per weight is outside what these levels reach "
                                    f"[{lo:.3f}, {hi:.3f}] (scales and zeros included); choose a target inside, "
                                    "or other --levels")
    band = band_below(bits_per_weight * sum(numels), space)
    return QuantBudget(band.low, band.high)


def uniform_genome(space: Space, level: str) -> Genome | None:
    """Every layer at `level` (None where some layer lacks it)."""
    if not all(level in u.levels for u in space.units):
        return None
    return tuple(u.levels.index(level) for u in space.units)


def role_genome(space: Space, budget: CostBudget, kinds: list[str], blocks: list[int], base: str,
                favoured: tuple[str, ...] = ("v_proj", "down_proj")) -> Genome | None:
    """A fixed mix in the spirit of llama.cpp's Q*_K_M: `base` everywhere, one level more for the
    favoured projections and for the first and last block, then, while over budget, one level less
    for the other projections, from the middle block outwards (a deterministic walk)."""
    genome = uniform_genome(space, base)
    if genome is None:
        return None
    genome = list(genome)
    last = max(blocks)
    for i, u in enumerate(space.units):
        if (kinds[i] in favoured or blocks[i] in (0, last)) and genome[i] + 1 < u.num_levels:
            genome[i] += 1
    middle = last / 2
    order = sorted((i for i in range(len(space)) if kinds[i] not in favoured and blocks[i] not in (0, last)),
                   key=lambda i: (abs(blocks[i] - middle), i))
    while space.cost(genome) > budget.high:
        lowered = False
        for i in order:
            if genome[i] > 0 and space.cost(genome) > budget.high:
                genome[i] -= 1
                lowered = True
        if not lowered:
            return None
    return tuple(genome) if budget.satisfied(space, genome) else None


def bits_per_weight(space: Space, genome: Genome, numels: list[int]) -> float:
    return space.cost(genome) / sum(numels)


def parse_levels(text) -> tuple[str, ...]:
    names = tuple(s.strip().lower() for s in (text.split(",") if isinstance(text, str) else text) if s.strip())
    if len(names) < 2:
        raise RecipeError(f"--levels needs at least two levels to choose between, got {list(names)}; "
                          "e.g. --levels int2,int3,int4,int8,bf16")
    if len(set(names)) != len(names):
        raise RecipeError(f"--levels lists a level twice: {list(names)}")
    return names
