"""(f) EvoPress on budget-constrained linear functions: O(k(n−k)/λ) generations.

Sieberling, Kuznedelev, Kurtic, Alistarh, "EvoPress" (arXiv 2410.14649), convergence statement.
The (1+λ)-EA with level-switch mutation maximises f(x) = Σ w_i x_i over
{x : |x|₁ = k}. With d of the k ones outside the k heaviest positions, at least d² of the
k(n−k) single switches improve f, and Σ_d k(n−k)/d² = O(k(n−k)); λ offspring divide that by λ
while λ is small against the number of improving moves. The reference depth-pruning script
runs k(n−k)/1.5 generations for this reason. The ratio of the generations used to k(n−k)/λ
stays bounded over n, k and λ.

Besides the vectorised runs, the smallest cells run `evopress.search`'s own EvoPress strategy
(ask → select → tell, one exact selection stage) on the same functions: the two must agree.
"""

from __future__ import annotations

import math
import time

import numpy as np

from evopress.theory.experiments.report import Report
from evopress.theory.functions import BudgetLinear
from evopress.theory.mutation import LevelSwitch
from evopress.theory.stats import fit_exponent, mean_se, summarize
from evopress.theory.strategies import evolve, plus

NAME = "budget"
HELP = "(f) EvoPress (1+λ) with level-switch mutation on budget-constrained linear functions vs k(n-k)/λ"
SIZES = (16, 32, 64, 128, 256)
RUNS = 100
QUICK = {"sizes": (16, 32, 64), "runs": 30, "engine": ((16, 4, 8),), "engine_runs": 60}  # the tests' reduced size
OFFSPRING = (1, 8, 32)
FRACTIONS = (0.25, 0.5)  # k = fraction · n
ENGINE = ((16, 4, 8), (32, 8, 8))  # (n, k, λ) cells also run with evopress.search's EvoPress
ENGINE_RUNS = 100


def engine_generations(n: int, k: int, lam: int, runs: int, seed: int = 0) -> np.ndarray:
    """Generations after the initial point of `evopress.search.EvoPress` on BudgetLinear(n, k)."""
    from evopress.search import Budget, EvoPress, Space, Stage, State, Unit, select

    fn = BudgetLinear(n, k)
    space = Space(tuple(Unit(f"unit{i}", "units", ("0", "1"), (0.0, 1.0)) for i in range(n)))
    budget = Budget.of(units=k)
    strategy = EvoPress(space, budget, offspring=lam)

    def evaluate(genomes, fidelity):  # the engine minimises
        return [-float(fn.weights @ np.asarray(g)) for g in genomes]

    rng = np.random.default_rng(seed)
    out = np.zeros(runs, dtype=np.int64)
    for r in range(runs):
        parent = budget.random_genome(space, rng)
        state = State(parent=parent, fitness=evaluate([parent], None)[0], rng=rng)
        while state.fitness > -fn.optimum:
            children = strategy.ask(state)
            survivors, fitness = select(children, strategy.carry(state), (Stage(1, 1),), evaluate, lambda i: 0)
            state = strategy.tell(state, survivors, fitness)
            out[r] += 1
    return out


def run(sizes: tuple[int, ...] = SIZES, runs: int = RUNS, seed: int = 0, engine=ENGINE,
        engine_runs: int = ENGINE_RUNS) -> Report:
    t0 = time.perf_counter()
    rows, finished = [], True
    for lam in OFFSPRING:
        for frac in FRACTIONS:
            for n in sizes:
                k = max(1, round(frac * n))
                result = evolve(BudgetLinear(n, k), plus(lam, LevelSwitch()), runs, seed=[seed, lam, k, n])
                finished &= bool(result.finished.all())
                gens = summarize(result.generations - 1, result.finished)
                ref = k * (n - k) / lam
                rows.append({"implementation": "theory", "n": n, "k": k, "λ": lam, "runs": runs,
                             "median gens": gens["median"], "mean gens": gens["mean"], "SE": gens["se"],
                             "k(n-k)/λ": ref, "ratio": gens["mean"] / ref})
    worst_z = 0.0
    for n, k, lam in engine:
        g_engine = mean_se(engine_generations(n, k, lam, engine_runs, seed))
        g_theory = mean_se(evolve(BudgetLinear(n, k), plus(lam, LevelSwitch()), engine_runs,
                                  seed=[seed, 99, n]).generations - 1)
        z = (g_engine[0] - g_theory[0]) / math.hypot(g_engine[1], g_theory[1])
        worst_z = max(worst_z, abs(z))
        ref = k * (n - k) / lam
        rows.append({"implementation": "search engine", "n": n, "k": k, "λ": lam, "runs": engine_runs,
                     "mean gens": g_engine[0], "SE": g_engine[1], "k(n-k)/λ": ref, "ratio": g_engine[0] / ref,
                     "z vs theory": z})
    ratios = [r["ratio"] for r in rows if r["implementation"] == "theory"]
    summary = {"ratio min": min(ratios), "ratio max": max(ratios)}
    checks = {"every run reached the optimum": finished,
              "generations / (k(n-k)/λ) within [0.5, 4] for all n, k, λ (λ = 1: the d² argument gives ≈ 3)":
                  0.5 <= min(ratios) and max(ratios) <= 4}
    large = [n for n in sizes if n >= 32]
    if len(large) >= 3:  # below n = 32 few ones are misplaced at the start and the ratio is still rising
        slopes = []
        for lam in OFFSPRING:
            for frac in FRACTIONS:
                cell = {r["n"]: r["ratio"] for r in rows if r["implementation"] == "theory" and r["λ"] == lam
                        and r["k"] == max(1, round(frac * r["n"]))}
                slopes.append(fit_exponent(large, [cell[n] for n in large]))
        summary[f"slope of log ratio vs log n, n >= 32, per (λ, k) (max {max(slopes):.3f})"] = slopes
        checks["the ratio does not grow with n: slope of log ratio vs log n below 0.15 for n >= 32"] = max(slopes) < 0.15
    if engine:
        summary["largest |z| engine vs theory"] = worst_z
        checks["evopress.search's EvoPress agrees with the vectorised strategy (|z| < 4)"] = worst_z < 4
    columns = ["implementation", "n", "k", "λ", "runs", "median gens", "mean gens", "SE", "k(n-k)/λ", "ratio",
               "z vs theory"]
    settings = {"sizes": list(sizes), "runs": runs, "seed": seed, "offspring": list(OFFSPRING),
                "k": [f"{f:g} n" for f in FRACTIONS], "weights": "random permutation of 1..n (unique optimum)",
                "algorithm": "(1+λ)-EA, level-switch mutation (min(U{1..3},U{1..3}) switches), duplicates redrawn",
                "generations": "after the initial point", "engine cells": [list(c) for c in engine]}
    return Report(NAME, "EvoPress generations to the optimum of a linear function on |x|₁ = k", columns, rows,
                  summary, checks, settings, time.perf_counter() - t0)


def plot(report: Report):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    rows = [r for r in report.rows if r["implementation"] == "theory"]
    for i, lam in enumerate(report.settings["offspring"]):
        for frac, marker in zip(FRACTIONS, ("o", "s")):
            cell = [r for r in rows if r["λ"] == lam and r["k"] == max(1, round(frac * r["n"]))]
            ax.errorbar([r["n"] for r in cell], [r["ratio"] for r in cell],
                        yerr=[2 * r["SE"] / r["k(n-k)/λ"] for r in cell], fmt="-" + marker, color=f"C{i}",
                        capsize=2, label=f"λ = {lam}, k = {frac:g} n")
    engine = [r for r in report.rows if r["implementation"] == "search engine"]
    if engine:
        ax.plot([r["n"] for r in engine], [r["ratio"] for r in engine], "k*", ms=10, label="evopress.search EvoPress")
    ax.set_xscale("log", base=2)
    ax.set_ylim(bottom=0)
    ax.set(xlabel="n", ylabel="mean generations / (k(n−k)/λ)",
           title="(f) EvoPress on budget-constrained linear functions: a bounded ratio (±2 SE)")
    ax.legend(fontsize=8, ncol=2)
    return fig
