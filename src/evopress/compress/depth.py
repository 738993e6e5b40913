"""Depth pruning: which attention and MLP sublayers are dropped (EvoPress §3.3, arXiv 2410.14649).

Depth has no database: a level is "keep" (0) or "drop" (1). This module turns that into plain
data the model adapter applies, and builds the search space for sublayer or block granularity.
It imports no torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from evopress.errors import InfeasibleBudgetError
from evopress.search import Budget, Space, Unit


@dataclass(frozen=True)
class DropPlan:
    """Per decoder block, whether its attention and its MLP sublayer are dropped."""

    attn: tuple[bool, ...]
    mlp: tuple[bool, ...]

    def __post_init__(self):
        if len(self.attn) != len(self.mlp):
            raise ValueError(f"attn has {len(self.attn)} blocks, mlp has {len(self.mlp)}")

    @classmethod
    def dense(cls, num_blocks: int) -> "DropPlan":
        return cls((False,) * num_blocks, (False,) * num_blocks)

    @classmethod
    def blocks(cls, num_blocks: int, dropped) -> "DropPlan":
        """Whole blocks dropped: both sublayers of each listed block."""
        mask = tuple(i in set(dropped) for i in range(num_blocks))
        return cls(mask, mask)

    @property
    def num_blocks(self) -> int:
        return len(self.attn)

    @property
    def removed_blocks(self) -> tuple[int, ...]:
        """Blocks whose attention and MLP are both dropped (physically removable on export)."""
        return tuple(i for i, (a, m) in enumerate(zip(self.attn, self.mlp)) if a and m)

    def to_dict(self) -> dict:
        return {"attn": [int(x) for x in self.attn], "mlp": [int(x) for x in self.mlp]}

    @classmethod
    def from_dict(cls, d: dict) -> "DropPlan":
        return cls(tuple(bool(x) for x in d["attn"]), tuple(bool(x) for x in d["mlp"]))

    def describe(self) -> list[str]:
        """One of none|attn|mlp|attn+mlp per block, the reference's layer_drop_config format."""
        names = {(False, False): "none", (True, False): "attn", (False, True): "mlp", (True, True): "attn+mlp"}
        return [names[(a, m)] for a, m in zip(self.attn, self.mlp)]


GRANULARITIES = ("sublayer", "block")


def drop_count(target: float, num_blocks: int) -> int:
    """A target as a count of dropped units per kind: an int is a count, a float in (0, 1) a fraction.

    Fractions round down, as the reference's `int(sparsity * num_blocks)`.
    """
    if isinstance(target, float) and target < 1:
        if target <= 0:
            raise InfeasibleBudgetError(f"drop fraction {target} must lie in (0, 1)")
        count = int(target * num_blocks + 1e-9)
    elif isinstance(target, float) and not target.is_integer():
        raise InfeasibleBudgetError(f"drop target {target}: give a fraction below 1 or a whole count")
    else:
        count = int(target)
    if not 0 < count < num_blocks:
        raise InfeasibleBudgetError(
            f"target {target} means dropping {count} of {num_blocks} per kind; "
            f"choose between 1 and {num_blocks - 1} (or a fraction in (0, 1))")
    return count


def depth_space(num_blocks: int, attn_params: int, mlp_params: int, granularity: str = "sublayer"):
    """The search space: one keep/drop unit per sublayer (groups attn, mlp) or per block (group block).

    Costs are the parameters a unit keeps, so a genome's cost is the model's remaining
    decoder parameters.
    """
    if granularity == "sublayer":
        units = [Unit(f"attn.{i}", "attn", ("keep", "drop"), (float(attn_params), 0.0)) for i in range(num_blocks)]
        units += [Unit(f"mlp.{i}", "mlp", ("keep", "drop"), (float(mlp_params), 0.0)) for i in range(num_blocks)]
    elif granularity == "block":
        units = [Unit(f"block.{i}", "block", ("keep", "drop"), (float(attn_params + mlp_params), 0.0))
                 for i in range(num_blocks)]
    else:
        raise ValueError(f"granularity must be one of {GRANULARITIES}, got {granularity!r}")
    return Space(tuple(units))


def depth_budget(space, count: int):
    return Budget(tuple((group, count) for group in sorted(space.groups())))


def plan_from_genome(space, genome) -> DropPlan:
    """Translate a genome of a depth space into the plan the model adapter applies."""
    attn: dict[int, bool] = {}
    mlp: dict[int, bool] = {}
    for unit, level in zip(space.units, genome):
        kind, index = unit.name.split(".")
        dropped = level == 1
        if kind in ("attn", "block"):
            attn[int(index)] = dropped
        if kind in ("mlp", "block"):
            mlp[int(index)] = dropped
    n = len(attn)
    return DropPlan(tuple(attn[i] for i in range(n)), tuple(mlp[i] for i in range(n)))


def genome_from_plan(space, plan: DropPlan):
    """The inverse of plan_from_genome (for baselines that produce plans)."""
    out = []
    for unit in space.units:
        kind, index = unit.name.split(".")
        mask = plan.mlp if kind == "mlp" else plan.attn
        out.append(int(mask[int(index)]))
    return tuple(out)


def default_generations(space, count: int) -> int:
    """The reference's schedule k(n−k)/1.5, from the O(k(n−k)/λ) bound for linear fitness."""
    n = max(len(m) for m in space.groups().values())
    return max(1, round(count * (n - count) / 1.5))
