"""Multi-step selection: successive halving over growing token budgets (EvoPress §3, Alg. 1).

Candidates are scored on a small fresh minibatch, the best few go on to a larger one, and so
on; only the last stage decides. Every candidate of a stage sees the same tokens. The parent
(the `carry` list) joins only the last stage, so it is compared with the finalists on the
same, largest minibatch: elitism on fresh data, as in the reference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from evopress.search.fidelity import Fidelity
from evopress.search.space import Genome

Evaluate = Callable[[list[Genome], Fidelity], list[float]]


@dataclass(frozen=True)
class Stage:
    survivors: int
    tokens: int
    train_tokens: int = 0  # each candidate trained on this many tokens before it is scored

    def __post_init__(self):
        if self.survivors < 1 or self.tokens < 1 or self.train_tokens < 0:
            raise ValueError(f"a stage needs survivors >= 1 and tokens >= 1, got {self}")


def _clean(value: float) -> float:
    return math.inf if math.isnan(value) else float(value)


def select(candidates: list[Genome], carry: list[Genome], stages: tuple[Stage, ...],
           evaluate: Evaluate, draw: Callable[[int], int]) -> tuple[list[Genome], list[float]]:
    """Run the stages; return the last stage's survivors and their fitness, best first.

    A non-final stage whose pool already fits its survivor count is skipped: it could not
    eliminate anyone. Ties keep the earlier candidate.
    """
    pool, fitness = list(candidates), []
    last = len(stages) - 1
    for i, stage in enumerate(stages):
        if i == last:
            pool += [g for g in carry if g not in pool]
        elif len(pool) <= stage.survivors:
            continue
        if not pool:
            return [], []
        values = [_clean(v) for v in evaluate(pool, Fidelity(stage.tokens, draw(i), stage.train_tokens))]
        order = sorted(range(len(pool)), key=lambda j: (values[j], j))[: stage.survivors]
        pool, fitness = [pool[j] for j in order], [values[j] for j in order]
    return pool, fitness
