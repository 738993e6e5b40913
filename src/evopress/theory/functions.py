"""Pseudo-Boolean benchmark functions, read from flip lists. Maximisation.

A function never evaluates a point in isolation. Given the parents of R runs and their offspring
as flip lists, it returns `scores`, an integer or float array (R, *shape, C) whose lexicographic
order over the last axis is the order of f_t on the offspring, with the parent at the zero
vector. So the best offspring is a lexicographic argmax and its comparison with the parent is
the sign of its first non-zero score (`evopress.theory.strategies.select`).

- OneMax, linear functions, budget-constrained linear functions: C = 1, the fitness gain.
- BinVal and the dynamic BinVal family (DBV, ADBV, FDBV, SDBV): BinVal after ranking the bits.
  Offspring differ from their parent only at their flips, so f_t(y) - f_t(x) is decided by the
  flips sorted by rank; each flip gets a score that is positive for a 0→1 flip and shrinks
  with its rank, negative for a 1→0 flip and grows with its rank, and 0 pads the list. Two
  offspring then compare like their score lists, exactly and without 2^n floats.

A dynamic function picks its ranking per generation from the parent (ADBV, FDBV, SDBV) or at
random (DBV); all comparisons of one generation use the same ranking. Every function here is
independent across generations given the parent, which lets the elitist loop draw several
generations at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from evopress.theory.hashing import splitmix64
from evopress.theory.mutation import Flips

TOP = np.int64(1) << 62  # rank keys lie in [0, TOP)

__all__ = ["ADBV", "BinVal", "BudgetLinear", "DynamicBinVal", "FDBV", "Function", "LeadingOnes", "Linear",
           "OneMax", "Parents", "SDBV", "gains", "random_linear"]


@dataclass
class Parents:
    """The current parent of each of R runs, with the counts and extras functions read."""

    x: np.ndarray  # (R, n) uint8
    ones: np.ndarray  # (R,) int64, |x|₁
    state: dict[str, np.ndarray] = field(default_factory=dict)  # per-run extras (DisOM: hash, height)

    def take(self, rows: np.ndarray) -> "Parents":
        return Parents(self.x[rows], self.ones[rows], {k: v[rows] for k, v in self.state.items()})

    def bits(self, flips: Flips) -> np.ndarray:
        """x at every flipped position (F,)."""
        return self.x[flips.run, flips.pos]

    def per_run(self, a: np.ndarray, ndim: int) -> np.ndarray:
        """A per-run array (R,) reshaped to broadcast against arrays with `ndim` axes."""
        return a.reshape((-1,) + (1,) * (ndim - 1))


def signed(parents: Parents, flips: Flips) -> np.ndarray:
    """Per flip: +1 for a 0→1 flip, -1 for a 1→0 flip."""
    return 1 - 2 * parents.bits(flips).astype(np.int64)


def gains(parents: Parents, flips: Flips, weights: np.ndarray | None = None) -> np.ndarray:
    """f(y) − f(x) of a linear function for every offspring, shaped like flips.count (int64)."""
    values = signed(parents, flips) if weights is None else weights[flips.pos] * signed(parents, flips)
    return np.rint(flips.total(values)).astype(np.int64)


class Function:
    """The interface every benchmark implements; subclasses are frozen dataclasses with a field `n`."""

    n: int
    name: str = "function"

    def init(self, rng: np.random.Generator, runs: int) -> np.ndarray:
        """Starting points: uniform random bit strings."""
        return rng.integers(0, 2, size=(runs, self.n), dtype=np.uint8)

    def start(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Per-run extras for the starting points."""
        return {}

    def scores(self, rng: np.random.Generator, parents: Parents, flips: Flips) -> tuple[np.ndarray, dict]:
        """(scores (R, *shape, C), aux): aux holds per-offspring extras that become the parent's state."""
        raise NotImplementedError

    def done(self, parents: Parents) -> np.ndarray:
        """The stopping criterion per run: the optimum, for monotone functions."""
        return parents.ones == self.n


@dataclass(frozen=True)
class OneMax(Function):
    n: int
    name: str = "OneMax"

    def scores(self, rng, parents, flips):
        return gains(parents, flips)[..., None], {}


@dataclass(frozen=True, eq=False)
class Linear(Function):
    """f(x) = Σ w_i x_i with positive weights."""

    n: int
    weights: np.ndarray
    name: str = "linear"

    def scores(self, rng, parents, flips):
        return gains(parents, flips, self.weights)[..., None], {}


def random_linear(n: int, seed: int = 0) -> Linear:
    """The SDBV-EA "noisy linear function": integer weights i.i.d. uniform on {1..n}, fixed per n and seed."""
    weights = np.random.default_rng([seed, n]).integers(1, n + 1, size=n)
    return Linear(n, weights, name="linear")


@dataclass(frozen=True)
class LeadingOnes(Function):
    """LO(x) = length of the longest all-ones prefix. Background only: read from dense offspring."""

    n: int
    name: str = "LeadingOnes"

    def scores(self, rng, parents, flips):
        y = np.repeat(parents.x, flips.count.size // flips.runs, axis=0)
        y[flips.owner, flips.pos] ^= 1
        gain = _leading_ones(y).reshape(flips.count.shape) - parents.per_run(_leading_ones(parents.x), flips.count.ndim)
        return gain[..., None], {}


def _leading_ones(x: np.ndarray) -> np.ndarray:
    return np.where(x.all(axis=-1), x.shape[-1], np.argmin(x, axis=-1))


class Ranked(Function):
    """BinVal after ranking the bits: the base of BinVal and the dynamic BinVal family."""

    def keys(self, rng: np.random.Generator, parents: Parents, flips: Flips, bits: np.ndarray) -> np.ndarray:
        """Rank of each flipped position, in [0, TOP); smaller = more significant."""
        raise NotImplementedError

    def scores(self, rng, parents, flips):
        if flips.pos.size == 0:
            return np.zeros(flips.count.shape + (1,), dtype=np.int64), {}
        bits = parents.bits(flips)
        key = self.keys(rng, parents, flips, bits)
        order = np.lexsort((key, flips.owner))  # by offspring, then by rank
        score = np.where(bits == 0, TOP - key, key - TOP)[order]
        return flips.dense(score), {}


@dataclass(frozen=True)
class BinVal(Ranked):
    """BV(x) = Σ 2^(n-i) x_i: bit 1 (position 0) is the most significant."""

    n: int
    name: str = "BinVal"

    def keys(self, rng, parents, flips, bits):
        return flips.pos


@dataclass(frozen=True)
class DynamicBinVal(Ranked):
    """DBV: BinVal under a fresh uniformly random ranking per generation (one per run and generation).

    The ranking is a hash of the position with a fresh salt, so only flipped positions are ranked.
    """

    n: int
    name: str = "DBV"

    def keys(self, rng, parents, flips, bits):
        generations = flips.count.size // flips.count.shape[-1]  # one salt per run and generation
        salt = rng.integers(0, 2**63, size=generations, dtype=np.int64).astype(np.uint64)
        salt = salt[flips.owner // flips.count.shape[-1]]
        return (splitmix64(flips.pos.astype(np.uint64) ^ salt) >> np.uint64(2)).astype(np.int64)


@dataclass(frozen=True)
class ADBV(Ranked):
    """Adversarial DBV: the parent's zeros get the highest weights, so any offspring that flips a 0 wins."""

    n: int
    name: str = "ADBV"

    def keys(self, rng, parents, flips, bits):
        return bits.astype(np.int64) * self.n + flips.pos


@dataclass(frozen=True)
class FDBV(Ranked):
    """"Friendly" DBV: the parent's ones get the highest weights, so only 1→0-free offspring win."""

    n: int
    name: str = "FDBV"

    def keys(self, rng, parents, flips, bits):
        return (1 - bits.astype(np.int64)) * self.n + flips.pos


@dataclass(frozen=True)
class SDBV(Ranked):
    """Switching DBV: ADBV while the parent has fewer than `threshold` zeros (default n/2), else FDBV."""

    n: int
    threshold: float | None = None
    name: str = "SDBV"

    @property
    def t(self) -> float:
        return self.n / 2 if self.threshold is None else self.threshold

    def keys(self, rng, parents, flips, bits):
        adversarial = (self.n - parents.ones) < self.t
        ranked_first = np.where(adversarial, 0, 1)[flips.run]  # zeros first (ADBV) or ones first (FDBV)
        return (bits.astype(np.int64) ^ ranked_first) * self.n + flips.pos


@dataclass(frozen=True)
class BudgetLinear(Function):
    """A linear function on {x : |x|₁ = k}: the setting of EvoPress's convergence statement.

    The weights are a random permutation of 1..n (fixed by `seed`), so the optimum, the k
    heaviest positions, is unique. Starting points are uniform random k-subsets.
    """

    n: int
    k: int
    seed: int = 0
    name: str = "budget linear"

    @cached_property
    def weights(self) -> np.ndarray:
        return np.random.default_rng([self.seed, self.n, self.k]).permutation(self.n) + 1

    @cached_property
    def optimum(self) -> int:
        return int(np.sort(self.weights)[-self.k:].sum())

    def init(self, rng, runs):
        chosen = np.argsort(rng.random((runs, self.n)), axis=1)[:, : self.k]
        x = np.zeros((runs, self.n), dtype=np.uint8)
        np.put_along_axis(x, chosen, 1, axis=1)
        return x

    def scores(self, rng, parents, flips):
        return gains(parents, flips, self.weights)[..., None], {}

    def done(self, parents):
        return parents.x.astype(np.int64) @ self.weights == self.optimum
