"""The six experiments of the theory suite, one module each, in the order of issue 5 (a)–(f).

Every module has `NAME`, `HELP`, default `SIZES` and `RUNS`, `QUICK` (the reduced settings the
tests use), `run(sizes, runs, seed, ...) -> Report` and `plot(report) -> Figure`.
"""

from evopress.theory.experiments import budget, disom, drift, sdbv, selfadjust, threshold
from evopress.theory.experiments.report import Report

EXPERIMENTS = {m.NAME: m for m in (sdbv, drift, threshold, selfadjust, disom, budget)}

__all__ = ["EXPERIMENTS", "Report"]
