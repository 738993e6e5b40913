"""(d) Static and self-adjusting (1,λ)/(1+λ) EAs: evaluations grow like n^1.5 on SDBV and ADBV only.

Kaufmann et al. (arXiv 2311.07438), simulations item 6. Static
λ = round(2 ln n); the self-adjusting EAs use the (1:s+1) success rule with F = 1.15, s = 0.25
(80 % target success rate) and a fresh λ₀ = 2 ln n per run. On OneMax, DBV, FDBV and a random
linear function the evaluation counts grow like n log n (log-log slope ≈ 1.1–1.3 here), on SDBV
and ADBV like n^1.5, for all four algorithms.
"""

from __future__ import annotations

import math
import time

import numpy as np

from evopress.theory.experiments.report import Report
from evopress.theory.functions import ADBV, FDBV, SDBV, DynamicBinVal, OneMax, random_linear
from evopress.theory.stats import fit_exponent, summarize
from evopress.theory.strategies import comma, default_lambda, evolve, plus, self_adjusting

NAME = "selfadjust"
HELP = "(d) static and self-adjusting (1,λ)/(1+λ) EAs on SDBV, ADBV, OneMax, DBV, FDBV, linear"
SIZES = (100, 200, 400, 800)
RUNS = 50
QUICK = {"sizes": (50, 100, 200, 400), "runs": 30}  # the tests' reduced size
FUNCTIONS = {"OneMax": OneMax, "DBV": DynamicBinVal, "FDBV": FDBV, "linear": random_linear, "ADBV": ADBV,
             "SDBV": SDBV}
HARD = ("ADBV", "SDBV")


def algorithms(n: int) -> dict:
    lam = default_lambda(n, 2.0)
    return {"(1+λ)": plus(lam), "(1,λ)": comma(lam), "SA-(1+λ)": self_adjusting(2 * math.log(n), elitist=True),
            "SA-(1,λ)": self_adjusting(2 * math.log(n))}


def run(sizes: tuple[int, ...] = SIZES, runs: int = RUNS, seed: int = 0) -> Report:
    if len(set(sizes)) < 2:
        raise ValueError("fitting an exponent needs at least two different sizes n")
    t0 = time.perf_counter()
    rows, summary = [], {}
    for f, (name, make) in enumerate(FUNCTIONS.items()):
        for a, algo in enumerate(algorithms(sizes[0])):
            means = []
            for n in sizes:
                ea = algorithms(n)[algo]
                result = evolve(make(n), ea, runs, seed=[seed, f, a, n])
                ev = summarize(result.evaluations, result.finished)
                gen = summarize(result.generations, result.finished)
                means.append(ev["mean"])
                rows.append({"function": name, "algorithm": algo, "n": n, "λ₀": ea.lam, "median evals": ev["median"],
                             "mean evals": ev["mean"], "SE": ev["se"], "mean gens": gen["mean"],
                             "evals/n^1.5": ev["mean"] / n**1.5, "evals/(n ln n)": ev["mean"] / (n * math.log(n))})
            summary[f"{name} {algo} exponent"] = fit_exponent(sizes, means)
    algos = list(algorithms(sizes[0]))
    hard = {a: [summary[f"{f} {a} exponent"] for f in HARD] for a in algos}
    easy = {a: [summary[f"{f} {a} exponent"] for f in FUNCTIONS if f not in HARD] for a in algos}
    hard_mean = float(np.mean([v for a in algos for v in hard[a]]))
    easy_mean = float(np.mean([v for a in algos for v in easy[a]]))
    gaps = {a: float(np.mean(hard[a]) - np.mean(easy[a])) for a in algos}
    summary["SDBV/ADBV mean exponent"] = hard_mean
    summary["OneMax/DBV/FDBV/linear mean exponent"] = easy_mean
    summary["per algorithm: mean hard − mean other exponent"] = [gaps[a] for a in algos]
    checks = {"SDBV/ADBV: mean exponent in [1.4, 1.6]": 1.4 <= hard_mean <= 1.6,
              "OneMax/DBV/FDBV/linear: mean exponent in [1.05, 1.35]": 1.05 <= easy_mean <= 1.35,
              "SDBV/ADBV exceed the others by >= 0.15 in mean exponent": hard_mean - easy_mean >= 0.15,
              "and by >= 0.1 for each of the four algorithms": min(gaps.values()) >= 0.1}
    columns = ["function", "algorithm", "n", "λ₀", "median evals", "mean evals", "SE", "mean gens", "evals/n^1.5",
               "evals/(n ln n)"]
    settings = {"sizes": list(sizes), "runs": runs, "seed": seed, "static λ": "round(2 ln n)",
                "self-adjusting": "F = 1.15, s = 0.25, λ₀ = 2 ln n fresh per run, λ ≥ 1",
                "evaluations": "1 for the initial point + round(λ) per generation"}
    return Report(NAME, "Evaluations to the optimum (static λ = round(2 ln n); SA: F = 1.15, s = 0.25)", columns,
                  rows, summary, checks, settings, time.perf_counter() - t0)


def plot(report: Report):
    import matplotlib.pyplot as plt

    algos = list(dict.fromkeys(r["algorithm"] for r in report.rows))
    fig, axes = plt.subplots(1, len(algos), figsize=(4 * len(algos), 4), sharey=True)
    for ax, algo in zip(np.atleast_1d(axes), algos):
        for name in FUNCTIONS:
            rows = [r for r in report.rows if r["function"] == name and r["algorithm"] == algo]
            ns = np.array([r["n"] for r in rows])
            ax.errorbar(ns, [r["mean evals"] / (r["n"] * math.log(r["n"])) for r in rows],
                        yerr=[2 * r["SE"] / (r["n"] * math.log(r["n"])) for r in rows],
                        fmt="--o" if name in HARD else "-o", ms=3, capsize=2, label=name)
        ax.set_xscale("log")
        ax.set_xticks(ns, [str(n) for n in ns])
        ax.minorticks_off()
        ax.set(xlabel="n", title=algo)
    np.atleast_1d(axes)[0].set_ylabel("mean evaluations / (n ln n)")
    np.atleast_1d(axes)[0].legend(fontsize=8)
    fig.suptitle("(d) only SDBV and ADBV grow faster than n ln n (±2 SE)")
    return fig
