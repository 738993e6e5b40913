"""Summaries of run times, honest about censoring.

A censored run (one stopped at the cutoff) only says "T ≥ cutoff". So its mean is never taken:
`summarize` reports the median (the lower median: always one run's value), which stays exact
while at most half the runs are censored and is +inf otherwise, the quartiles the same way, and
the censored fraction. Mean and
standard error are given only when no run is censored.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["exponent_se", "fit_exponent", "mean_se", "summarize"]


def mean_se(values: np.ndarray) -> tuple[float, float]:
    values = np.asarray(values, dtype=float)
    se = values.std(ddof=1) / math.sqrt(len(values)) if len(values) > 1 else math.nan
    return float(values.mean()), float(se)


def summarize(values: np.ndarray, finished: np.ndarray | None = None) -> dict:
    """runs, censored fraction, median and quartiles (+inf where censored runs decide them), mean ± SE."""
    values = np.asarray(values, dtype=float)
    finished = np.ones(len(values), dtype=bool) if finished is None else np.asarray(finished, dtype=bool)
    censored = np.where(finished, values, np.inf)  # a censored run is "at least the cutoff": rank it last
    q25, median, q75 = np.quantile(censored, [0.25, 0.5, 0.75], method="lower")
    out = {"runs": int(len(values)), "censored": float(1 - finished.mean()),
           "median": float(median), "q25": float(q25), "q75": float(q75), "mean": math.nan, "se": math.nan}
    if finished.all():
        out["mean"], out["se"] = mean_se(values)
    return out


def fit_exponent(sizes, values) -> float:
    """Least-squares slope of log(value) against log(n): value ≈ c·n^slope."""
    if len(set(sizes)) < 2:
        raise ValueError("fitting an exponent needs at least two different sizes n")
    x, y = np.log(np.asarray(sizes, dtype=float)), np.log(np.asarray(values, dtype=float))
    return float(np.polyfit(x, y, 1)[0])


def exponent_se(sizes, relative_errors) -> float:
    """Standard error of `fit_exponent` when log(value_i) has standard error relative_errors[i] (= SE/mean)."""
    x = np.log(np.asarray(sizes, dtype=float))
    c = (x - x.mean()) / ((x - x.mean()) ** 2).sum()
    return float(np.sqrt((c**2 * np.asarray(relative_errors, dtype=float) ** 2).sum()))
