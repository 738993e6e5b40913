"""The vectorised EAs: selection, counters, censoring, look-ahead, self-adjustment, determinism."""

import math
import subprocess
import sys

import numpy as np

from evopress.theory import strategies
from evopress.theory.disom import DisOM
from evopress.theory.experiments.budget import engine_generations
from evopress.theory.functions import ADBV, BudgetLinear, OneMax
from evopress.theory.mutation import LevelSwitch
from evopress.theory.stats import mean_se, summarize
from evopress.theory.strategies import comma, evolve, one_plus_one, plus, select, self_adjusting


def test_theory_does_not_import_torch_or_matplotlib():
    code = ("import sys, evopress.theory, evopress.theory.experiments, evopress.cli.theory; "
            "sys.exit(1 if {'torch', 'matplotlib'} & set(sys.modules) else 0)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_select_takes_the_first_lexicographic_maximum():
    scores = np.array([[[[0, 0], [2, -5], [2, 3], [2, 3]]], [[[-1, 9], [-1, 9], [-2, 0], [0, 0]]]])
    best, sign = select(scores, np.ones((2, 1, 4), dtype=bool))
    assert best.tolist() == [[2], [3]] and sign.tolist() == [[1], [0]]
    best, sign = select(scores, np.array([[[False, True, False, False]], [[True, True, True, False]]]))
    assert best.tolist() == [[1], [0]] and sign.tolist() == [[1], [-1]]


def test_counters_follow_the_reference():
    runs = evolve(OneMax(30), plus(5), 40, seed=1)
    assert runs.finished.all()
    assert (runs.evaluations == 1 + 5 * (runs.generations - 1)).all()


def test_censored_runs_stop_at_the_cutoff_and_are_never_averaged():
    runs = evolve(OneMax(200), one_plus_one(), 20, seed=2, max_generations=300)
    assert not runs.finished.any() and (runs.generations == 300).all()
    s = summarize(runs.generations, runs.finished)
    assert s["censored"] == 1.0 and math.isinf(s["median"]) and math.isnan(s["mean"])
    s = summarize([5, 7, 9, 300], [True, True, True, False])
    assert s["median"] == 7 and math.isnan(s["mean"]) and s["censored"] == 0.25


def test_lookahead_is_the_same_process(monkeypatch):
    """Drawing several generations at once (elitist, fixed λ) must not change the runtime law."""
    fast = evolve(ADBV(40), plus(3), 600, seed=3).generations
    monkeypatch.setattr(strategies, "MAX_CHUNK", 1)  # one generation per step
    slow = evolve(ADBV(40), plus(3), 600, seed=4).generations
    (a, sa), (b, sb) = mean_se(fast), mean_se(slow)
    assert abs(a - b) < 4 * math.hypot(sa, sb)


def test_self_adjusting_lambda_and_evaluations():
    runs = evolve(OneMax(100), self_adjusting(2 * math.log(100)), 30, seed=5)
    assert runs.finished.all()
    assert (runs.evaluations >= runs.generations).all()  # round(λ) ≥ 1 per generation


def test_comma_leaves_local_optima_that_trap_plus():
    fn = DisOM(80, seed=6)
    cut = 20_000
    p = evolve(fn, plus(6), 30, seed=7, max_generations=cut)
    c = evolve(fn, comma(6), 30, seed=7, max_generations=cut)
    assert c.finished.all() and p.censored > 0
    assert np.median(c.generations) < np.median(np.where(p.finished, p.generations, np.inf))


def test_same_seed_same_runs():
    a = evolve(ADBV(30), comma(4), 10, seed=8)
    b = evolve(ADBV(30), comma(4), 10, seed=8)
    assert np.array_equal(a.generations, b.generations) and np.array_equal(a.evaluations, b.evaluations)


def test_evopress_strategy_matches_the_search_engine():
    n, k, lam, runs = 12, 3, 4, 300
    engine = mean_se(engine_generations(n, k, lam, runs, seed=9))
    ours = mean_se(evolve(BudgetLinear(n, k), plus(lam, LevelSwitch()), runs, seed=10).generations - 1)
    assert abs(engine[0] - ours[0]) < 4 * math.hypot(engine[1], ours[1])
