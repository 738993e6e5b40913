"""The exact count-level Markov chain of the (1+1)-EA on OneMax and the dynamic BinVal family.

With standard bit mutation at rate p, the parent's number of zeros z is a Markov chain for
OneMax, DBV, ADBV, FDBV and SDBV: an offspring flips I ~ Bin(z, p) zeros and J ~ Bin(n−z, p)
ones, and whether it is accepted depends only on (z, I, J):

    OneMax  I ≥ J              ADBV  I ≥ 1              SDBV  ADBV if z < t, else FDBV
    DBV     I / (I + J)        FDBV  I ≥ 1 and J = 0    (t = n/2; `threshold` moves it)

(clones, I = J = 0, are accepted and change nothing). The expected hitting times E_z of z = 0
solve (I − P) E = 1 on z = 1..n, and E[T] = Σ_z C(n,z) 2^-n E_z from a uniform start. These
count generations *after* the initial point: one less than the reference counter. I and J are
truncated where their tail is below 1e-20, which is exact to machine precision.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["FUNCTIONS", "acceptance", "drift", "drift_adbv", "drift_fdbv", "expected_runtime", "hitting_times",
           "transition_matrix"]

FUNCTIONS = ("OneMax", "DBV", "FDBV", "ADBV", "SDBV")


def acceptance(name: str, n: int, z: np.ndarray, i: np.ndarray, j: np.ndarray,
               threshold: float | None = None) -> np.ndarray:
    """P(the (1+1)-EA accepts an offspring that flips i zeros and j ones of a parent with z zeros)."""
    adbv = (i >= 1).astype(float)
    fdbv = ((i >= 1) & (j == 0)).astype(float)
    if name == "OneMax":
        return (i >= j).astype(float)
    if name == "DBV":
        return np.where(i + j == 0, 1.0, i / np.maximum(i + j, 1))
    if name == "ADBV":
        return adbv
    if name == "FDBV":
        return fdbv
    if name == "SDBV":
        t = n / 2 if threshold is None else threshold
        return np.where(z < t, adbv, fdbv)
    raise ValueError(f"no count-level chain for {name!r}; choose one of {', '.join(FUNCTIONS)}")


def binomial_pmf(m: np.ndarray, p: float, kmax: int) -> np.ndarray:
    """P(Bin(m, p) = k) for every m in `m` and k = 0..kmax, in log space (no underflow for large m)."""
    m = np.asarray(m, dtype=float)[:, None]
    k = np.arange(kmax + 1, dtype=float)
    if p <= 0 or p >= 1:
        return (k == (m * (p >= 1))).astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        steps = np.log(np.maximum(m - k[:-1], 0)) - np.log(k[1:])  # log C(m, k+1) - log C(m, k)
    log_choose = np.concatenate([np.zeros((len(m), 1)), np.cumsum(steps, axis=1)], axis=1)
    logp = log_choose + k * math.log(p) + (m - k) * math.log1p(-p)
    return np.where(k <= m, np.exp(logp), 0.0)


def _truncation(n: int, p: float) -> int:
    """The largest flip count worth keeping: Bin(n, p) is below 1e-20 beyond it."""
    mean = n * p
    return int(min(n, math.ceil(mean + 10 * math.sqrt(mean + 1) + 20)))


def _moves(name: str, n: int, p: float, threshold: float | None):
    """For every z: the probability and the z-change of every (I, J) pair, accepted ones only."""
    kmax = _truncation(n, p)
    z = np.arange(n + 1)
    pi = binomial_pmf(z, p, kmax)  # (n+1, kmax+1) over I
    pj = binomial_pmf(n - z, p, kmax)  # over J
    i = np.arange(kmax + 1)[None, :, None]
    j = np.arange(kmax + 1)[None, None, :]
    prob = pi[:, :, None] * pj[:, None, :] * acceptance(name, n, z[:, None, None], i, j, threshold)
    return z, prob, j - i  # z' = z − I + J


def transition_matrix(name: str, n: int, p: float | None = None, threshold: float | None = None) -> np.ndarray:
    """P[z, z'] of the (1+1)-EA's number of zeros; rejected and truncated mass stays at z."""
    p = 1 / n if p is None else p
    z, prob, step = _moves(name, n, p, threshold)
    target = np.clip(z[:, None, None] + step, 0, n)
    index = (z[:, None, None] * (n + 1) + target).ravel()
    P = np.bincount(index, weights=prob.ravel(), minlength=(n + 1) ** 2).reshape(n + 1, n + 1)
    P[z, z] += 1 - P.sum(axis=1)
    return P


def hitting_times(name: str, n: int, p: float | None = None, threshold: float | None = None) -> np.ndarray:
    """E_z: expected generations from z zeros to the optimum (E_0 = 0)."""
    P = transition_matrix(name, n, p, threshold)
    A = np.eye(n) - P[1:, 1:]
    return np.concatenate([[0.0], np.linalg.solve(A, np.ones(n))])


def expected_runtime(name: str, n: int, p: float | None = None, threshold: float | None = None) -> float:
    """E[T] from a uniform random start, in generations after the initial one."""
    E = hitting_times(name, n, p, threshold)
    z = np.arange(n + 1)
    log_weights = np.array([math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) for k in z])
    return float(np.exp(log_weights - n * math.log(2)) @ E)


def drift(name: str, n: int, p: float | None = None, threshold: float | None = None) -> np.ndarray:
    """Δ(z) = E[z_t − z_{t+1} | z_t = z] for z = 0..n: the expected loss of zeros in one generation."""
    p = 1 / n if p is None else p
    _, prob, step = _moves(name, n, p, threshold)
    return -(prob * step).sum(axis=(1, 2))


def drift_adbv(n: int, p: float) -> np.ndarray:
    """Closed form Δ_A(z) = zp − (1 − (1−p)^z)(n−z)p."""
    z = np.arange(n + 1)
    return z * p - (1 - (1 - p) ** z) * (n - z) * p


def drift_fdbv(n: int, p: float) -> np.ndarray:
    """Closed form Δ_F(z) = zp(1−p)^(n−z)."""
    z = np.arange(n + 1)
    return z * p * (1 - p) ** (n - z)
