"""One-parent evolutionary strategies, vectorised over independent runs.

`EA` covers the (1+1)-EA, (1+λ)-EA, (1,λ)-EA and the self-adjusting SA-(1,λ)/SA-(1+λ) with the
(1:s+1) success rule, with any mutation of `evopress.theory.mutation`; EvoPress is
`EA(lam=32, mutation=LevelSwitch())`, the same (1+λ) scheme and mutation as
`evopress.search.strategies.EvoPress` without the multi-fidelity selection, which exact fitness
does not need. `evolve` runs R independent runs of one strategy on one function as NumPy
arrays, one generation per step for every run still going.

Counters follow the reference codes: the initial point is generation 1 and evaluation 1, and
every generation adds round(λ) evaluations.

Elitist runs with a fixed λ draw several generations at once: while the parent does not change,
generations are i.i.d. (every function here depends only on the parent and fresh randomness),
so drawing G of them and keeping the first that moves the parent is the same process. G grows
while few runs move, which is what makes plus strategies stuck on a local optimum cheap.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from evopress.theory.functions import Function, Parents
from evopress.theory.mutation import Mutation, StandardBit

__all__ = ["EA", "Runs", "comma", "default_lambda", "evolve", "one_plus_one", "plus", "select", "self_adjusting"]

MAX_CHUNK = 1 << 20  # offspring drawn at once when looking ahead; bounds memory


@dataclass(frozen=True)
class EA:
    lam: float = 1.0  # offspring per generation; the start value λ₀ when self-adjusting
    plus: bool = True  # elitist (1+λ): keep the parent unless an offspring is at least as good
    F: float = 1.0  # F > 1: self-adjusting; λ ← max(1, λ/F) on success, λ·F^(1/s) otherwise
    s: float = 1.0  # success ratio: log λ is stationary at P(success) = 1/(1+s)
    mutation: Mutation = field(default_factory=StandardBit)

    @property
    def adaptive(self) -> bool:
        return self.F != 1.0

    @property
    def name(self) -> str:
        sep = "+" if self.plus else ","
        if self.adaptive:
            return f"SA-(1{sep}λ)-EA"
        lam = f"{self.lam:g}" if self.lam == 1 else "λ"
        return f"(1{sep}{lam})-EA"


def one_plus_one(mutation: Mutation | None = None) -> EA:
    return EA(1, True, mutation=mutation or StandardBit())


def plus(lam: int, mutation: Mutation | None = None) -> EA:
    return EA(lam, True, mutation=mutation or StandardBit())


def comma(lam: int, mutation: Mutation | None = None) -> EA:
    return EA(lam, False, mutation=mutation or StandardBit())


def self_adjusting(lam0: float, elitist: bool = False, F: float = 1.15, s: float = 0.25) -> EA:
    """The SDBV paper's SA-(1,λ)-EA (or SA-(1+λ)): F = 1.15, s = 0.25 targets 80 % successes."""
    return EA(lam0, elitist, F, s)


def offspring_count(lam: np.ndarray) -> np.ndarray:
    """round(λ) as C's round (halves away from zero), at least one."""
    return np.maximum(1, np.floor(lam + 0.5)).astype(np.int64)


def select(scores: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Best offspring and its comparison with the parent, per generation.

    scores: (R, G, L, C), lexicographically ordered like f_t, parent = 0; valid: (R, 1|G, L).
    Returns best (R, G), the first index among the lexicographic maxima, and sign (R, G) in
    {-1, 0, 1}, the sign of f_t(best) - f_t(parent).
    """
    low = -np.inf if scores.dtype.kind == "f" else np.iinfo(scores.dtype).min
    candidate = np.broadcast_to(valid, scores.shape[:-1])
    for c in range(scores.shape[-1]):
        column = np.where(candidate, scores[..., c], low)
        candidate = candidate & (column == column.max(axis=-1, keepdims=True))
    best = np.argmax(candidate, axis=-1)
    top = np.take_along_axis(scores, best[..., None, None], axis=-2)[..., 0, :]
    first = np.argmax(top != 0, axis=-1)
    sign = np.sign(np.take_along_axis(top, first[..., None], axis=-1)[..., 0])
    return best, sign.astype(np.int64)


@dataclass
class Runs:
    """Outcome of R runs. A run that hit the cutoff is censored: its counters are lower bounds."""

    generations: np.ndarray  # (R,) int64, reference counter (initial point = 1)
    evaluations: np.ndarray  # (R,) int64
    finished: np.ndarray  # (R,) bool; False = censored at the cutoff
    cutoff: int  # generations
    seconds: float = 0.0

    @property
    def censored(self) -> float:
        return float(1 - self.finished.mean())


def evolve(fn: Function, ea: EA, runs: int, seed: int | np.random.Generator = 0,
           max_generations: int = 10**12) -> Runs:
    """R independent runs of `ea` on `fn` from random starting points, until done or the cutoff."""
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    x = fn.init(rng, runs)
    parents = Parents(x, x.sum(axis=1, dtype=np.int64), fn.start(x))
    ids = np.arange(runs)  # the runs still going, in the order of `parents`
    gens, evals = np.ones(runs, dtype=np.int64), np.ones(runs, dtype=np.int64)
    lam = np.full(runs, float(ea.lam))
    out = Runs(gens.copy(), evals.copy(), np.zeros(runs, dtype=bool), max_generations)
    lookahead = ea.plus and not ea.adaptive
    chunk = 1

    def retire():
        nonlocal parents, ids, gens, evals, lam
        done = fn.done(parents)
        stop = done | (gens >= max_generations)
        out.generations[ids[stop]], out.evaluations[ids[stop]], out.finished[ids[stop]] = gens[stop], evals[stop], done[stop]
        keep = ~stop
        parents, ids, gens, evals, lam = parents.take(keep), ids[keep], gens[keep], evals[keep], lam[keep]

    retire()
    while ids.size:
        G, count = chunk, offspring_count(lam)
        L = int(count.max())
        flips = ea.mutation(rng, parents.x, (G, L))
        scores, aux = fn.scores(rng, parents, flips)
        best, sign = select(scores, (np.arange(L) < count[:, None])[:, None, :])
        clone = np.take_along_axis(flips.count, best[..., None], axis=-1)[..., 0] == 0
        if lookahead:  # the first of G generations whose selected offspring replaces the parent
            left = max_generations - gens
            event = (sign >= 0) & ~clone & (np.arange(G) < left[:, None])
            move, g = event.any(axis=1), np.argmax(event, axis=1)
            steps = np.where(move, g + 1, np.minimum(G, left))
            chunk = chunk * 2 if move.mean() < 0.5 else max(1, chunk // 2)
            chunk = max(1, min(chunk, MAX_CHUNK // (ids.size * L)))
        else:
            g, steps = np.zeros(ids.size, dtype=np.int64), 1
            move = ~clone[:, 0] & (sign[:, 0] >= 0 if ea.plus else True)
            if ea.adaptive:
                lam = np.where(sign[:, 0] > 0, np.maximum(1.0, lam / ea.F), lam * ea.F ** (1 / ea.s))
        _replace(parents, flips, aux, move, g, best[np.arange(ids.size), g], G, L)
        gens += steps
        evals += steps * count
        retire()
    out.seconds = time.perf_counter() - t0
    return out


def _replace(parents: Parents, flips, aux: dict, move: np.ndarray, g: np.ndarray, b: np.ndarray, G: int, L: int):
    """Move the runs in `move` to their offspring (g, b): flip its bits and take over its extras."""
    rows = np.arange(len(move))
    which, pos = flips.of(((rows * G + g) * L + b)[move])
    r = rows[move][which]
    parents.ones += np.bincount(r, weights=1 - 2 * parents.x[r, pos].astype(np.int64),
                                minlength=rows.size).astype(np.int64)
    parents.x[r, pos] ^= 1
    for key, value in aux.items():
        parents.state[key] = np.where(move, value[rows, g, b], parents.state[key])


def default_lambda(n: int, c: float = 2.0) -> int:
    """round(c ln n): c = 2 in the SDBV experiments, c = 1.5 in the DisOM experiments."""
    return max(1, int(math.floor(c * math.log(n) + 0.5)))
