"""Mutation operators for a batch of runs, as flip lists.

An offspring is its parent with a set of distinct positions flipped. `Flips` holds the offspring
of R parents, `count` of shape (R, *shape) flips each, as one flat list of positions, offspring
after offspring in C order. Everything downstream (fitness gains, lexicographic comparison, the
parent update) reads only these positions, so a generation costs O(R·λ·E[K]) rather than
O(R·λ·n), and a rare offspring with many flips costs only its own flips.

- standard bit mutation with rate χ/n: K ~ Bin(n, χ/n) distinct uniform positions; K = 0 is a
  clone and is kept, since clones are what hold the comma strategy on a local optimum;
- heavy-tailed (power-law) mutation: P(K = k) ∝ k^-β on {1..n}, never a clone
  (Lengler, Schiller, Sieberling, GECCO 2024, extra figure);
- level-switch mutation (EvoPress, arXiv 2410.14649): min(U{1..3}, U{1..3}) switches, each
  moving one 0-bit to 1 and one 1-bit to 0, so |x|₁ is preserved; copies of the parent and
  duplicates within a generation are redrawn, as in `evopress.search.strategies.EvoPress`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property, lru_cache

import numpy as np

from evopress.theory.hashing import splitmix64

__all__ = ["Flips", "HeavyTailed", "LevelSwitch", "Mutation", "StandardBit", "distinct_positions",
           "switch_counts"]


@dataclass(frozen=True)
class Flips:
    """Offspring o (flat index into `count`) flips pos[start[o] : start[o] + count.flat[o]]."""

    count: np.ndarray  # (R, *shape) int64
    pos: np.ndarray  # (F,) int64, F = count.sum()

    @property
    def runs(self) -> int:
        return self.count.shape[0]

    @cached_property
    def start(self) -> np.ndarray:
        c = self.count.reshape(-1)
        return np.cumsum(c) - c

    @cached_property
    def owner(self) -> np.ndarray:
        """The flat offspring index of every flip."""
        return np.repeat(np.arange(self.count.size), self.count.reshape(-1))

    @cached_property
    def run(self) -> np.ndarray:
        """The run (parent) of every flip."""
        return self.owner // (self.count.size // self.runs)

    @cached_property
    def rank(self) -> np.ndarray:
        """The index of every flip within its offspring."""
        return np.arange(self.pos.size) - self.start[self.owner]

    def total(self, values: np.ndarray) -> np.ndarray:
        """Per-offspring sums of per-flip values, shaped like count (float64)."""
        return np.bincount(self.owner, weights=values, minlength=self.count.size).reshape(self.count.shape)

    def dense(self, values: np.ndarray, fill=0) -> np.ndarray:
        """Per-flip values as an array (R, *shape, max count), padded with `fill`."""
        out = np.full((self.count.size, int(self.count.max(initial=0))), fill, dtype=values.dtype)
        out[self.owner, self.rank] = values
        return out.reshape(self.count.shape + (-1,))

    def of(self, offspring: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(which, pos): the flips of the given flat offspring indices; which[i] indexes `offspring`."""
        c = self.count.reshape(-1)[offspring]
        which = np.repeat(np.arange(len(offspring)), c)
        first = np.repeat(self.start[offspring] - (np.cumsum(c) - c), c)
        return which, self.pos[first + np.arange(which.size)]

    @classmethod
    def from_dense(cls, pos: np.ndarray, count: np.ndarray) -> "Flips":
        return cls(count, pos[np.arange(pos.shape[-1]) < count[..., None]])


class Mutation:
    """`mutation(rng, x, shape)` -> Flips with count of shape (R, *shape) for parents x (R, n)."""

    name: str

    def __call__(self, rng: np.random.Generator, x: np.ndarray, shape: tuple[int, ...]) -> Flips:
        raise NotImplementedError


def distinct_positions(rng: np.random.Generator, count: np.ndarray, n: int) -> Flips:
    """`count[...]` distinct uniform positions out of n per offspring.

    The i-th flip of an offspring is drawn uniformly and redrawn while it repeats an earlier
    one, i.e. uniformly among the positions not yet taken: the result is a uniform set. Counts
    above n/4 (only the heavy-tailed operator makes them), where repeats would be frequent,
    take the first K of a random permutation instead.
    """
    c = count.reshape(-1)
    flips = Flips(count, rng.integers(0, n, size=int(c.sum())))
    pos, rank, start, owner = flips.pos, flips.rank, flips.start, flips.owner
    big = c[owner] > n // 4
    for i in range(1, int(c.max(initial=0))):
        todo = np.flatnonzero((rank == i) & ~big)
        while todo.size:
            clash = np.zeros(todo.size, dtype=bool)
            for d in range(1, i + 1):
                clash |= pos[todo] == pos[todo - d]
            todo = todo[clash]
            pos[todo] = rng.integers(0, n, size=todo.size)
    wide = np.flatnonzero(c > n // 4)
    if wide.size:
        perm = np.argsort(rng.random((wide.size, n)), axis=1)
        keep = np.arange(n) < c[wide, None]
        pos[(start[wide, None] + np.arange(n))[keep]] = perm[keep]
    return flips


@dataclass(frozen=True)
class StandardBit(Mutation):
    """Flip each bit independently with probability χ/n (χ = 1: the standard rate)."""

    chi: float = 1.0

    @property
    def name(self) -> str:
        return "standard bit" if self.chi == 1 else f"standard bit ({self.chi:g}/n)"

    def __call__(self, rng: np.random.Generator, x: np.ndarray, shape: tuple[int, ...]) -> Flips:
        n = x.shape[1]
        u = rng.random((x.shape[0], *shape))
        count = np.minimum(np.searchsorted(_binomial_cdf(n, min(1.0, self.chi / n)), u, side="right"), n)
        return distinct_positions(rng, count.astype(np.int64), n)


@lru_cache(maxsize=64)
def _binomial_cdf(n: int, p: float) -> np.ndarray:
    """CDF of Bin(n, p) at 0..n (inverse-CDF sampling is faster than Generator.binomial here)."""
    k = np.arange(n + 1)
    if p <= 0 or p >= 1:
        return (k >= (n if p >= 1 else 0)).astype(float)
    log_pmf = np.array([math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) for i in k])
    with np.errstate(divide="ignore"):
        log_pmf += k * np.log(p) + (n - k) * np.log1p(-p)
    return np.cumsum(np.exp(log_pmf))


@dataclass(frozen=True)
class HeavyTailed(Mutation):
    """Flip K distinct positions with P(K = k) ∝ k^-β on {1..n}: large jumps are rare but not too rare."""

    beta: float = 1.5

    @property
    def name(self) -> str:
        return f"power-law β={self.beta:g}"

    def __call__(self, rng: np.random.Generator, x: np.ndarray, shape: tuple[int, ...]) -> Flips:
        n = x.shape[1]
        cdf = np.cumsum(np.arange(1, n + 1, dtype=float) ** -self.beta)
        u = rng.random((x.shape[0], *shape)) * cdf[-1]
        count = np.minimum(np.searchsorted(cdf, u, side="right") + 1, n)
        return distinct_positions(rng, count.astype(np.int64), n)


def switch_counts(rng: np.random.Generator, size, max_switches: int = 3) -> np.ndarray:
    """`evopress.search.mutation.num_switches` for a whole batch: min of two uniforms on {1..M}."""
    a = rng.integers(1, max_switches + 1, size=size)
    return np.minimum(a, rng.integers(1, max_switches + 1, size=size))


@dataclass(frozen=True)
class LevelSwitch(Mutation):
    """EvoPress's budget-preserving mutation on {x : |x|₁ = k}; the binary case of `search.mutation.level_switch`.

    Each switch picks a uniformly random current 0-bit and a uniformly random current 1-bit of
    the offspring so far and flips both; later switches may undo earlier ones. Copies of the
    parent and duplicates within a generation (the next-to-last axis of `shape`) are redrawn,
    up to `max_tries` rounds; in a space too small to hold λ distinct neighbours some remain
    and then count as ties.
    """

    max_switches: int = 3
    max_tries: int = 100

    @property
    def name(self) -> str:
        return "level switch"

    def __call__(self, rng: np.random.Generator, x: np.ndarray, shape: tuple[int, ...]) -> Flips:
        pos, count = self._draw(rng, x, shape)
        for _ in range(self.max_tries):
            bad = (count == 0) | _repeats(pos, count)
            if not bad.any():
                break
            new_pos, new_count = self._draw(rng, x, shape)
            pos, count = _merge(pos, count, new_pos, new_count, bad)
        return Flips.from_dense(pos, count)

    def _draw(self, rng: np.random.Generator, x: np.ndarray, shape: tuple[int, ...]):
        """Dense (pos (R, *shape, W) ascending then 0-padded, count (R, *shape))."""
        runs, n = x.shape
        k = int(x[0].sum())
        assert (x.sum(axis=1) == k).all() and 0 < k < n, "level switch needs one budget 0 < k < n for all runs"
        order = np.argsort(x, axis=1, kind="stable")  # per run: its 0-positions, then its 1-positions
        zeros, ones = order[:, : n - k], order[:, n - k:]
        size = (runs, int(np.prod(shape)))
        rows = np.arange(runs)[:, None]
        m = switch_counts(rng, size, self.max_switches)
        # Slots index the parent's 0-list and 1-list; a switch swaps the contents of one slot of
        # each, so the 0-list always holds exactly the offspring's current zeros.
        zslot, zcont, oslot, ocont, picks = [], [], [], [], []
        for t in range(self.max_switches):
            on = m > t
            j, i = rng.integers(0, n - k, size), rng.integers(0, k, size)
            a, b = zeros[rows, j], ones[rows, i]
            for s in range(t):  # a slot touched before holds what the last switch put there
                a = np.where(zslot[s] == j, zcont[s], a)
                b = np.where(oslot[s] == i, ocont[s], b)
            zslot.append(np.where(on, j, -1))
            oslot.append(np.where(on, i, -1))
            zcont.append(b)
            ocont.append(a)
            picks += [np.where(on, a, -1), np.where(on, b, -1)]
        pos, count = _odd_positions(np.stack(picks, axis=-1), n)
        return pos.reshape((runs, *shape, -1)), count.reshape((runs, *shape))


def _odd_positions(picks: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The positions picked an odd number of times (-1 = no pick): the net flips of the switches."""
    same = picks[..., :, None] == picks[..., None, :]
    first = ~np.tril(same, k=-1).any(axis=-1)
    keep = (picks >= 0) & first & (same.sum(axis=-1) % 2 == 1)
    count = keep.sum(axis=-1)
    pos = np.sort(np.where(keep, picks, n), axis=-1)[..., : max(1, int(count.max(initial=0)))]
    return np.where(pos < n, pos, 0), count


def _repeats(pos: np.ndarray, count: np.ndarray) -> np.ndarray:
    """Offspring equal to an earlier offspring of the same generation (next-to-last axis).

    Each offspring's flip set gets an order-free 64-bit hash; a stable sort of the hashes puts
    equal sets next to each other, earliest first. O(λ log λ) memory and time per generation.
    """
    valid = np.arange(pos.shape[-1]) < count[..., None]
    key = np.where(valid, splitmix64(pos.astype(np.uint64) + np.uint64(1)), np.uint64(0)).sum(axis=-1, dtype=np.uint64)
    order = np.argsort(key, axis=-1, kind="stable")
    ranked = np.take_along_axis(key, order, axis=-1)
    later = np.concatenate([np.zeros(ranked.shape[:-1] + (1,), dtype=bool), ranked[..., 1:] == ranked[..., :-1]], axis=-1)
    out = np.empty_like(later)
    np.put_along_axis(out, order, later, axis=-1)
    return out


def _merge(pos, count, new_pos, new_count, take):
    width = max(pos.shape[-1], new_pos.shape[-1])

    def pad(p):
        return np.pad(p, [(0, 0)] * (p.ndim - 1) + [(0, width - p.shape[-1])])

    return np.where(take[..., None], pad(new_pos), pad(pos)), np.where(take, new_count, count)
