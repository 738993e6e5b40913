"""(c) Minimal drift is not maximal runtime: moving SDBV's switch from n/2 can make it slower.

Kaufmann et al. (arXiv 2311.07438), full version. SDBV uses the ADBV
ranking while z < t with t = n/2. The variants move t to n/2 − 1 and n/2 − 2: they use FDBV,
which has the larger drift there, on one or two more levels, so their drift is pointwise at
least SDBV's. Yet the exact expected runtime of the (1+1)-EA is *larger* for the n/2 − 1
variant at every odd n ≥ 9 (by about 1e-4 relative), and smaller for even n; the n/2 − 2
variant is faster at every odd n.
"""

from __future__ import annotations

import time

import numpy as np

from evopress.theory import markov
from evopress.theory.experiments.report import Report

NAME = "threshold"
HELP = "(c) exact E[T] of SDBV vs its variants with the switch moved to n/2-1, n/2-2 (small odd/even n)"
SIZES = tuple(range(6, 47))
RUNS = 0  # exact: no runs
QUICK = {"sizes": tuple(range(6, 47))}  # the tests' reduced size


def run(sizes: tuple[int, ...] = SIZES, runs: int = RUNS, seed: int = 0) -> Report:
    t0 = time.perf_counter()
    rows, drift_ok = [], True
    for n in sizes:
        base = markov.expected_runtime("SDBV", n)
        row = {"n": n, "parity": "odd" if n % 2 else "even", "E[T] SDBV": base}
        for shift in (1, 2):
            t = n / 2 - shift
            value = markov.expected_runtime("SDBV", n, threshold=t)
            row[f"E[T] t=n/2-{shift}"] = value
            row[f"rel. diff n/2-{shift}"] = value / base - 1
            gap = markov.drift("SDBV", n, threshold=t) - markov.drift("SDBV", n)
            drift_ok &= bool((gap >= -1e-12).all())
        rows.append(row)
    odd9 = [r for r in rows if r["n"] % 2 and r["n"] >= 9]
    even = [r for r in rows if r["n"] % 2 == 0]
    odd = [r for r in rows if r["n"] % 2]
    checks = {"the variants' drift is pointwise at least SDBV's": drift_ok,
              "odd n >= 9: the n/2-1 variant is slower than SDBV": all(r["rel. diff n/2-1"] > 0 for r in odd9),
              "even n: the n/2-1 variant is faster than SDBV": all(r["rel. diff n/2-1"] < 0 for r in even),
              "odd n: the n/2-2 variant is faster than SDBV": all(r["rel. diff n/2-2"] < 0 for r in odd)}
    summary = {"largest relative slowdown of the n/2-1 variant": max((r["rel. diff n/2-1"] for r in rows), default=0.0),
               "odd n checked (>= 9)": [r["n"] for r in odd9]}
    columns = ["n", "parity", "E[T] SDBV", "E[T] t=n/2-1", "rel. diff n/2-1", "E[T] t=n/2-2", "rel. diff n/2-2"]
    settings = {"sizes": list(sizes), "seed": seed,
                "rule": "ADBV ranking while zeros < t, FDBV otherwise; E[T] in generations after the initial point"}
    return Report(NAME, "Exact E[T] of the (1+1)-EA on SDBV with the switch at t", columns, rows, summary, checks,
                  settings, time.perf_counter() - t0, digits=8)


def plot(report: Report):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for shift, marker in ((1, "o"), (2, "s")):
        for parity, fill in (("odd", "full"), ("even", "none")):
            rows = [r for r in report.rows if r["parity"] == parity]
            rel = np.array([r[f"rel. diff n/2-{shift}"] for r in rows])
            ax.plot([r["n"] for r in rows], np.sign(rel) * np.abs(rel), marker, fillstyle=fill, ls="",
                    label=f"t = n/2 − {shift}, {parity} n")
    ax.set_yscale("symlog", linthresh=1e-5)
    ax.axhline(0, color="gray", lw=0.8)
    ax.set(xlabel="n", ylabel="E[T] variant / E[T] SDBV − 1",
           title="(c) above 0: the variant with larger drift is slower (odd n ≥ 9, t = n/2 − 1)")
    ax.legend(fontsize=8)
    return fig
