"""(e) Plus vs comma on DisOM: random-height local optima trap the (1+λ)-EA, not the (1,λ)-EA.

Lengler, Schiller, Sieberling, "Plus strategies are exponentially slower for planted optima of
random height" (GECCO 2024, arXiv 2404.09687) OneMax with
frozen-noise optima planted with probability p = 0.3/√n, target n − n^0.15 on total fitness,
λ = round(1.5 ln n) for both strategies, paired runs on the same landscapes.

The plus strategy accepts a distorted point of height δ and can then only move to a point of
fitness ≥ OM + δ: a rarer, higher distortion or a jump of ⌈δ⌉ OneMax levels. With exponential
heights δ ratchets up like a record process and the waiting time is superpolynomial, so more
and more plus runs hit the cutoff as n grows. With bounded heights (U(0,4)) the jump needed is
at most 4 bits and the slowdown is polynomial. The comma strategy leaves a local optimum as soon
as no offspring is a clone and finishes in every run. Censored runs are reported as such:
medians (censored = beyond the cutoff) and censored fractions, never means.
"""

from __future__ import annotations

import math
import time

import numpy as np

from evopress.theory.disom import DisOM, Heights
from evopress.theory.experiments.report import Report
from evopress.theory.stats import fit_exponent, summarize
from evopress.theory.strategies import comma, default_lambda, evolve, plus

NAME = "disom"
HELP = "(e) (1+λ) vs (1,λ) on DisOM with exponential and bounded heights, censored runs reported"
SIZES = (50, 75, 100, 150, 200)
RUNS = 100
QUICK = {"sizes": (50, 100, 150), "runs": 20, "cutoff": 300_000}  # the tests' reduced size
CUTOFF = 2_000_000  # evaluations per run
HEIGHTS = {"Exp(0.4)": Heights.exponential(0.4), "U(0,4)": Heights.uniform(4.0)}


def run(sizes: tuple[int, ...] = SIZES, runs: int = RUNS, seed: int = 0, cutoff: int = CUTOFF) -> Report:
    t0 = time.perf_counter()
    rows = []
    for h, (label, heights) in enumerate(HEIGHTS.items()):
        for n in sizes:
            lam = default_lambda(n, 1.5)
            landscape = int(np.random.SeedSequence([seed, h, n]).generate_state(1)[0])
            fn = DisOM(n, heights, seed=landscape)  # one landscape per run index, shared by plus and comma
            max_generations = (cutoff - 1) // lam + 1  # evaluations = 1 + λ (generations - 1) ≤ cutoff
            for name, ea in (("plus", plus(lam)), ("comma", comma(lam))):
                result = evolve(fn, ea, runs, seed=[seed, h, n], max_generations=max_generations)
                ev = summarize(result.evaluations, result.finished)
                rows.append({"heights": label, "n": n, "λ": lam, "strategy": f"(1{'+' if name == 'plus' else ','}λ)",
                             "runs": runs, "censored": ev["censored"], "median evals": ev["median"],
                             "q25": ev["q25"], "q75": ev["q75"], "seconds": result.seconds})
    summary, checks = {}, {}

    def cells(label, strategy):
        return [r for r in rows if r["heights"] == label and r["strategy"] == strategy]

    for label in HEIGHTS:
        summary[f"{label} plus censored fractions"] = [r["censored"] for r in cells(label, "(1+λ)")]
        summary[f"{label} comma censored fractions"] = [r["censored"] for r in cells(label, "(1,λ)")]
        summary[f"{label} median plus/comma"] = [p["median evals"] / c["median evals"]
                                                for p, c in zip(cells(label, "(1+λ)"), cells(label, "(1,λ)"))]
    bounded = [r["median evals"] for r in cells("U(0,4)", "(1+λ)")]
    if len(sizes) > 1 and all(math.isfinite(m) for m in bounded):
        summary["U(0,4) plus median exponent"] = fit_exponent(sizes, bounded)
    exp_plus = summary["Exp(0.4) plus censored fractions"]
    bounded_plus = summary["U(0,4) plus censored fractions"]
    checks["Exp(0.4): the plus censored fraction grows with n (to at least 0.5 at the largest n)"] = (
        exp_plus[-1] >= 0.5 and exp_plus[-1] > exp_plus[0]
        and all(b >= a - 0.15 for a, b in zip(exp_plus, exp_plus[1:])))
    checks["comma runs always finish (no censored comma run)"] = all(
        r["censored"] == 0 for r in rows if r["strategy"] == "(1,λ)")
    checks["plus is slower than comma (median) at every n, both height laws"] = all(
        v > 1 for label in HEIGHTS for v in summary[f"{label} median plus/comma"])
    checks["bounded heights trap plus less often than exponential ones (every n)"] = all(
        b <= e for b, e in zip(bounded_plus, exp_plus))
    columns = ["heights", "n", "λ", "strategy", "runs", "censored", "median evals", "q25", "q75", "seconds"]
    settings = {"sizes": list(sizes), "runs": runs, "seed": seed, "cutoff evaluations": cutoff,
                "p": "0.3/sqrt(n)", "target": "n - n^0.15 (total fitness)", "λ": "round(1.5 ln n)",
                "mutation": "standard bit, rate 1/n (the reference uses 1/(n+1))",
                "median": "lower median; 'censored' = more than half the runs hit the cutoff"}
    return Report(NAME, f"DisOM: evaluations to the target, cutoff {cutoff:,} evaluations", columns, rows, summary,
                  checks, settings, time.perf_counter() - t0)


def plot(report: Report):
    import matplotlib.pyplot as plt

    cutoff = report.settings["cutoff evaluations"]
    fig, axes = plt.subplots(1, len(HEIGHTS), figsize=(6 * len(HEIGHTS), 4.5), sharey=True)
    for ax, label in zip(np.atleast_1d(axes), HEIGHTS):
        for strategy, color in (("(1+λ)", "C3"), ("(1,λ)", "C0")):
            rows = [r for r in report.rows if r["heights"] == label and r["strategy"] == strategy]
            ns = np.array([r["n"] for r in rows])
            med = np.array([r["median evals"] for r in rows])
            ok = np.isfinite(med)
            q25 = np.array([r["q25"] for r in rows])[ok]
            q75 = np.minimum(np.array([r["q75"] for r in rows])[ok], cutoff)
            ax.errorbar(ns[ok], med[ok], yerr=[med[ok] - q25, q75 - med[ok]], fmt="-o", color=color, capsize=3,
                        label=f"{strategy} median (quartiles)")
            if (~ok).any():
                ax.plot(ns[~ok], np.full((~ok).sum(), cutoff), "^", color=color, fillstyle="none", ms=9,
                        label=f"{strategy}: median censored")
            for r in rows:
                if r["censored"] > 0:
                    y = min(r["median evals"], cutoff)
                    ax.annotate(f"{r['censored']:.0%}", (r["n"], y), textcoords="offset points", xytext=(4, -12),
                                fontsize=8, color=color)
        ax.axhline(cutoff, color="gray", ls="--", lw=0.8, label="cutoff")
        ax.set(xscale="log", yscale="log", xlabel="n", title=f"heights {label}")
        ax.set_xticks(report.settings["sizes"], [str(n) for n in report.settings["sizes"]])
        ax.minorticks_off()
        ax.legend(fontsize=8, loc="lower right")
    np.atleast_1d(axes)[0].set_ylabel("evaluations to the target")
    fig.suptitle("(e) DisOM: plus runs get trapped (censored fraction in %), comma runs finish")
    return fig
