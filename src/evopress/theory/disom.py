"""DisOM: OneMax with randomly planted optima of random height, by frozen noise.

Every point x independently is distorted with probability p, and then f(x) = OM(x) + D_x with
D_x ~ 𝒟 ≥ 0; otherwise f(x) = OM(x). The noise is frozen: re-evaluating x gives the same value.
A run stops when the parent's total fitness reaches the target n − k*, k* = n^0.15.

Instead of a dictionary of evaluated points (the reference code), the noise is a function of a
64-bit Zobrist hash h(x) = XOR of a random key per 1-position, salted per run: an
offspring's hash is its parent's hash XOR the keys of its flips, so a whole generation costs
O(λ·K). Up to hash collisions (negligible below 10^9 points) this is i.i.d. frozen noise. Runs
with the same index and the same `seed` see the same landscape, which pairs plus and comma runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from evopress.theory.functions import Function, Parents, gains
from evopress.theory.hashing import splitmix64
from evopress.theory.mutation import Flips

__all__ = ["DisOM", "Heights"]


@dataclass(frozen=True)
class Heights:
    """A distribution 𝒟 of distortion heights, sampled by its quantile function."""

    kind: str  # "exp", "uniform", "truncexp" or "constant"
    a: float  # rate (exp, truncexp), upper end (uniform) or the height (constant)
    cap: float = math.inf  # truncexp: condition on D ≤ cap

    @classmethod
    def exponential(cls, rate: float = 0.4) -> "Heights":
        return cls("exp", rate)

    @classmethod
    def uniform(cls, high: float = 4.0) -> "Heights":
        return cls("uniform", high)

    @classmethod
    def truncated(cls, cap: float, rate: float = 0.4) -> "Heights":
        """Exp(rate) conditioned on D ≤ cap (the reference samples it by rejection; same law)."""
        return cls("truncexp", rate, cap)

    @classmethod
    def constant(cls, d: float) -> "Heights":
        return cls("constant", d)

    @property
    def name(self) -> str:
        return {"exp": f"Exp({self.a:g})", "uniform": f"U(0,{self.a:g})",
                "truncexp": f"Exp({self.a:g}) ≤ {self.cap:.3g}", "constant": f"d={self.a:g}"}[self.kind]

    def quantile(self, u: np.ndarray) -> np.ndarray:
        if self.kind == "exp":
            return -np.log1p(-u) / self.a
        if self.kind == "uniform":
            return self.a * u
        if self.kind == "truncexp":
            return -np.log1p(-u * -math.expm1(-self.a * self.cap)) / self.a
        if self.kind == "constant":
            return np.full_like(u, self.a)
        raise ValueError(f"unknown height distribution {self.kind!r}; use exp, uniform, truncexp or constant")


@dataclass(frozen=True)
class DisOM(Function):
    """Distorted OneMax; p defaults to 0.3/√n and the target to n − n^0.15, as in the reference runs."""

    n: int
    heights: Heights = Heights.exponential()
    p: float | None = None
    target: float | None = None
    seed: int = 0

    @property
    def name(self) -> str:
        return f"DisOM {self.heights.name}"

    @property
    def planting(self) -> float:
        return 0.3 / math.sqrt(self.n) if self.p is None else self.p

    @property
    def goal(self) -> float:
        return self.n - self.n ** 0.15 if self.target is None else self.target

    @cached_property
    def keys(self) -> np.ndarray:
        return np.random.default_rng([self.seed, 1]).integers(0, 2**63, size=self.n, dtype=np.int64).astype(np.uint64)

    def height(self, h: np.ndarray, salt: np.ndarray) -> np.ndarray:
        """D of the points with hashes h (0 if undistorted)."""
        u = splitmix64(h ^ salt)
        distorted = (u >> np.uint64(11)).astype(np.float64) * 2.0**-53 < self.planting
        d = np.zeros(u.shape)
        u2 = (splitmix64(u[distorted]) >> np.uint64(11)).astype(np.float64) * 2.0**-53
        d[distorted] = self.heights.quantile(u2)
        return d

    def start(self, x: np.ndarray) -> dict[str, np.ndarray]:
        runs = len(x)
        salt = np.random.default_rng([self.seed, 2]).integers(0, 2**63, size=runs, dtype=np.int64).astype(np.uint64)
        h = np.bitwise_xor.reduce(np.where(x.astype(bool), self.keys, np.uint64(0)), axis=1)
        return {"salt": salt, "hash": h, "height": self.height(h, salt)}

    def scores(self, rng, parents: Parents, flips: Flips):
        delta = np.zeros(flips.count.size, dtype=np.uint64)  # XOR of the flipped keys per offspring
        some = np.flatnonzero(flips.count.reshape(-1))
        if some.size:
            delta[some] = np.bitwise_xor.reduceat(self.keys[flips.pos], flips.start[some])
        ndim = flips.count.ndim
        h = parents.per_run(parents.state["hash"], ndim) ^ delta.reshape(flips.count.shape)
        d = self.height(h, parents.per_run(parents.state["salt"], ndim))
        gain = gains(parents, flips) + (d - parents.per_run(parents.state["height"], ndim))
        return gain[..., None], {"hash": h, "height": d}

    def done(self, parents: Parents) -> np.ndarray:
        return parents.ones + parents.state["height"] >= self.goal
