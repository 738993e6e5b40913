"""(a) The (1+1)-EA on SDBV and ADBV takes Θ(n^1.5) generations; OneMax, DBV and FDBV take Θ(n log n).

Kaufmann, Larcher, Lengler, Sieberling, "Hardest monotone functions for evolutionary
algorithms" (arXiv 2311.07438), Thm. 2 and Fig. 1 Exact expected runtimes
from the count-level chain for n up to 3200, Monte-Carlo means of the bit-level implementation
for smaller n, and the log-log slope of each.

Near the optimum SDBV is ADBV, whose drift at z zeros is ≈ z²/n² while the variance is ≈ z/n:
the walk diffuses for ~n^1.5 generations around z ≈ √n. The others have drift ≈ z/n there.
"""

from __future__ import annotations

import math
import time

import numpy as np

from evopress.theory import markov
from evopress.theory.experiments.report import Report
from evopress.theory.functions import ADBV, FDBV, SDBV, DynamicBinVal, OneMax
from evopress.theory.stats import exponent_se, fit_exponent, mean_se
from evopress.theory.strategies import evolve, one_plus_one

NAME = "sdbv"
HELP = "(a) (1+1)-EA runtime on SDBV/ADBV vs OneMax/DBV/FDBV: exact chain, simulation, fitted exponents"
SIZES = (50, 100, 200, 400, 800, 1600)  # simulated
EXACT = (50, 100, 200, 400, 800, 1600, 3200)
RUNS = 100
QUICK = {"sizes": (50, 100, 200, 400), "runs": 40, "exact": (200, 400, 800, 1600)}  # the tests' reduced size
FUNCTIONS = {"OneMax": OneMax, "DBV": DynamicBinVal, "FDBV": FDBV, "ADBV": ADBV, "SDBV": SDBV}
HARD = ("ADBV", "SDBV")


def run(sizes: tuple[int, ...] = SIZES, runs: int = RUNS, seed: int = 0, exact: tuple[int, ...] | None = None) -> Report:
    if len(set(sizes)) < 2:
        raise ValueError("fitting an exponent needs at least two different sizes n")
    t0 = time.perf_counter()
    exact = tuple(sorted(set(EXACT if exact is None else exact) | set(sizes)))
    rows, summary, checks = [], {}, {}
    for name, make in FUNCTIONS.items():
        chain = {n: markov.expected_runtime(name, n) for n in exact}
        sim = {}
        for n in sizes:
            result = evolve(make(n), one_plus_one(), runs, seed=[seed, n, len(rows)])
            sim[n] = mean_se(result.generations - 1)
        for n in exact:
            mean, se = sim.get(n, (math.nan, math.nan))
            rows.append({"function": name, "n": n, "exact E[T]": chain[n], "sim mean": mean, "sim SE": se,
                         "z": (mean - chain[n]) / se if n in sim else math.nan,
                         "E/n^1.5": chain[n] / n**1.5, "E/(n ln n)": chain[n] / (n * math.log(n))})
        upper = [n for n in exact if n >= 200] or exact
        summary[f"{name} exponent (exact, n >= {upper[0]})"] = fit_exponent(upper, [chain[n] for n in upper])
        summary[f"{name} exponent (simulated)"] = fit_exponent(sizes, [sim[n][0] for n in sizes])
        summary[f"{name} exponent (exact, simulated sizes)"] = fit_exponent(sizes, [chain[n] for n in sizes])
        summary[f"{name} exponent (simulated) SE"] = exponent_se(sizes, [se / mean for mean, se in sim.values()])
    for name in FUNCTIONS:
        lo, hi = (1.4, 1.6) if name in HARD else (1.0, 1.3)
        key = next(k for k in summary if k.startswith(f"{name} exponent (exact, n"))
        checks[f"{key} in [{lo:g}, {hi:g}]"] = lo <= summary[key] <= hi
        gap = summary[f"{name} exponent (simulated)"] - summary[f"{name} exponent (exact, simulated sizes)"]
        se = summary[f"{name} exponent (simulated) SE"]
        checks[f"{name} simulated exponent within 4 SE of the exact one over the same n"] = abs(gap) <= 4 * se
    hard = [summary[f"{name} exponent (simulated)"] for name in HARD]
    easy = [summary[f"{name} exponent (simulated)"] for name in FUNCTIONS if name not in HARD]
    checks["simulated: SDBV and ADBV grow faster than OneMax, DBV and FDBV"] = min(hard) > max(easy)
    z = [abs(r["z"]) for r in rows if not math.isnan(r["z"])]
    summary["largest |z| of simulated mean vs exact"] = max(z)
    checks["simulated means agree with the exact chain (all |z| < 4)"] = max(z) < 4
    settings = {"sizes": list(sizes), "exact": list(exact), "runs": runs, "seed": seed,
                "algorithm": "(1+1)-EA, standard bit mutation 1/n",
                "counter": "generations after the initial point (reference counter - 1)"}
    columns = ["function", "n", "exact E[T]", "sim mean", "sim SE", "z", "E/n^1.5", "E/(n ln n)"]
    return Report(NAME, "(1+1)-EA generations to the optimum from a uniform start", columns, rows, summary,
                  checks, settings, time.perf_counter() - t0)


def plot(report: Report):
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4.5))
    for name in FUNCTIONS:
        rows = [r for r in report.rows if r["function"] == name]
        ns = np.array([r["n"] for r in rows])
        exact = np.array([r["exact E[T]"] for r in rows])
        style = "--" if name == "SDBV" else "-"  # SDBV and ADBV coincide at this scale
        line, = ax.loglog(ns, exact, style, label=f"{name} (exact)")
        sim = [r for r in rows if not math.isnan(r["sim mean"])]
        ax.errorbar([r["n"] for r in sim], [r["sim mean"] for r in sim], yerr=[2 * r["sim SE"] for r in sim],
                    fmt="o", ms=4, color=line.get_color(), capsize=2)
        bx.semilogx(ns, exact / ns**1.5, style + "o", ms=3, color=line.get_color(), label=name)
    ax.set(xlabel="n", ylabel="E[T] (generations)", title="exact (lines) and simulated (points, ±2 SE)")
    ax.legend(fontsize=8)
    bx.set(xlabel="n", ylabel="E[T] / n^1.5", title="normalised by n^1.5: flat for SDBV and ADBV")
    bx.legend(fontsize=8)
    fig.suptitle("(a) (1+1)-EA: SDBV and ADBV need Θ(n^1.5) generations")
    return fig
