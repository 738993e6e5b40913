"""(b) SDBV minimises the drift of the (1+1)-EA at every number of zeros, for any mutation rate.

Kaufmann et al. (arXiv 2311.07438), Thm. 1 The drift
Δ(z) = E[z_t − z_{t+1}] of OneMax, DBV, FDBV, ADBV and SDBV from the exact one-step
distribution, the closed forms Δ_A(z) = zp − (1−(1−p)^z)(n−z)p and Δ_F(z) = zp(1−p)^(n−z),
the switch Δ_A ≤ Δ_F ⇔ z ≤ n/2 that makes SDBV the pointwise minimum, and a Monte-Carlo
estimate of one generation of the bit-level implementation at a few z.
"""

from __future__ import annotations

import time

import numpy as np

from evopress.theory import markov
from evopress.theory.experiments.report import Report
from evopress.theory.experiments.sdbv import FUNCTIONS
from evopress.theory.functions import Parents
from evopress.theory.mutation import StandardBit
from evopress.theory.stats import mean_se
from evopress.theory.strategies import select

NAME = "drift"
HELP = "(b) drift of the (1+1)-EA per number of zeros: SDBV is the pointwise minimum"
SIZES = (100,)
RUNS = 100_000  # Monte-Carlo samples per (function, z)
QUICK = {"sizes": (100,), "runs": 20_000}  # the tests' reduced size
RATES = (0.5, 1.0, 2.0, 3.0)  # χ in p = χ/n; p = 0.3 is checked too
GRID = ((10, (1, 2, "0.3")), (11, (1, 2, "0.3")), (100, (1, 2, "0.3")), (101, (1, 2, "0.3")),
        (20, (0.5, 1, 2, 3, "0.3")), (100, (0.5, 1, 2, 3, "0.3")))  # the brief's numerical check


def one_step(fn, n: int, z: int, samples: int, rng: np.random.Generator, p: float | None = None) -> np.ndarray:
    """Zeros lost in one (1+1)-EA generation from random parents with z zeros (bit level)."""
    order = np.argsort(rng.random((samples, n)), axis=1)
    x = np.ones((samples, n), dtype=np.uint8)
    np.put_along_axis(x, order[:, :z], 0, axis=1)
    parents = Parents(x, np.full(samples, n - z, dtype=np.int64), fn.start(x))
    flips = StandardBit(1.0 if p is None else p * n)(rng, x, (1, 1))
    scores, _ = fn.scores(rng, parents, flips)
    _, sign = select(scores, np.ones((samples, 1, 1), dtype=bool))
    gain = flips.total(1 - 2 * parents.bits(flips).astype(np.int64))[:, 0, 0]
    return np.where(sign[:, 0] >= 0, gain, 0)


def _points(n: int) -> list[int]:
    return sorted({1, 2, 5, 10, n // 4, n // 2 - 1, n // 2, (n + 1) // 2, n // 2 + 1, 3 * n // 4, n} & set(range(1, n + 1)))


def run(sizes: tuple[int, ...] = SIZES, runs: int = RUNS, seed: int = 0) -> Report:
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    names = list(FUNCTIONS)
    rows, worst_z = [], 0.0
    for n in sizes:
        drifts = {name: markov.drift(name, n) for name in names}
        for z in _points(n):
            row = {"n": n, "z": z, **{name: drifts[name][z] for name in names}}
            row["min of others"] = min(drifts[name][z] for name in names if name != "SDBV")
            if runs:
                mean, se = mean_se(one_step(FUNCTIONS["SDBV"](n), n, z, runs, rng))
                row["SDBV sim"], row["sim SE"] = mean, se
                for name in names:  # every bit-level function against its exact drift
                    m, s = mean_se(one_step(FUNCTIONS[name](n), n, z, runs, rng)) if name != "SDBV" else (mean, se)
                    worst_z = max(worst_z, abs(m - drifts[name][z]) / s if s > 0 else 0.0)
            rows.append(row)

    gap, closed, switch = 0.0, 0.0, True
    for n, rates in GRID + tuple((n, RATES) for n in sizes):
        for rate in rates:
            p = 0.3 if rate == "0.3" else rate / n
            d = {name: markov.drift(name, n, p) for name in names}
            others = np.min([d[name] for name in names if name != "SDBV"], axis=0)
            gap = max(gap, float((d["SDBV"] - others).max()))
            closed = max(closed, float(np.abs(d["ADBV"] - markov.drift_adbv(n, p)).max()),
                         float(np.abs(d["FDBV"] - markov.drift_fdbv(n, p)).max()))
            z = np.arange(1, n)
            below = markov.drift_adbv(n, p)[1:n] <= markov.drift_fdbv(n, p)[1:n] + 1e-12
            switch &= bool(np.array_equal(below, z <= n / 2))
    n = sizes[0]
    summary = {"max over grid of Δ_SDBV − min(others)": gap, "max |chain − closed form|": closed,
               f"Δ_A(1) at p = 1/n, n = {n} (times n²)": markov.drift_adbv(n, 1 / n)[1] * n**2,
               f"Δ_A(1) at p = 2/n, n = {n}": markov.drift_adbv(n, 2 / n)[1]}
    checks = {"SDBV's drift is the pointwise minimum of OneMax, DBV, FDBV, ADBV (all n, p)": gap <= 1e-12,
              "chain drift equals the closed forms for ADBV and FDBV": closed <= 1e-10,
              "Δ_A(z) ≤ Δ_F(z) iff z ≤ n/2 (0 < z < n)": switch,
              "Δ_A(1) = 1/n² at p = 1/n": abs(markov.drift_adbv(n, 1 / n)[1] * n**2 - 1) < 1e-9,
              "Δ_A(1) < 0 for p = χ/n with χ > 1": markov.drift_adbv(n, 2 / n)[1] < 0}
    if runs:
        summary["largest |z| of bit-level drift vs exact"] = worst_z
        checks["bit-level one-step drift agrees with the exact drift (all |z| < 4)"] = worst_z < 4
    columns = ["n", "z", *names, "min of others"] + (["SDBV sim", "sim SE"] if runs else [])
    settings = {"sizes": list(sizes), "runs": runs, "seed": seed, "rates": list(RATES), "grid": [list(g) for g in GRID]}
    return Report(NAME, "Drift Δ(z) = E[z_t − z_{t+1}] of the (1+1)-EA at p = 1/n", columns, rows, summary,
                  checks, settings, time.perf_counter() - t0)


def plot(report: Report):
    import matplotlib.pyplot as plt

    n = report.settings["sizes"][0]
    z = np.arange(1, n + 1)
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4.5))
    sdbv = markov.drift("SDBV", n)[1:]
    for name in FUNCTIONS:
        if name != "SDBV":
            ax.semilogy(z, markov.drift(name, n)[1:] / sdbv, label=name)
    ax.axhline(1, color="gray", lw=0.8)
    ax.axvline(n / 2, color="gray", lw=0.8, ls=":")
    ax.set(xlabel="zeros z", ylabel="Δ_f(z) / Δ_SDBV(z)", title=f"n = {n}, p = 1/n: every ratio is ≥ 1")
    ax.legend(fontsize=8)
    for rate in report.settings["rates"]:
        p = rate / n
        diff = (markov.drift_adbv(n, p) - markov.drift_fdbv(n, p))[1:] / (z * p)
        bx.plot(z / n, diff, label=f"p = {rate:g}/n")
    bx.axhline(0, color="gray", lw=0.8)
    bx.axvline(0.5, color="gray", lw=0.8, ls=":")
    bx.set(xlabel="z / n", ylabel="(Δ_ADBV − Δ_FDBV) / (zp)", title="ADBV has the smaller drift iff z ≤ n/2")
    bx.legend(fontsize=8)
    fig.suptitle("(b) SDBV = ADBV below n/2 and FDBV above: the drift-minimising dynamic monotone function")
    return fig

