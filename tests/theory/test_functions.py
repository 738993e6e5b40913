"""Benchmark definitions on small hand-checked inputs, and the lexicographic scores against exact integers."""

import numpy as np
import pytest

from evopress.theory import (ADBV, FDBV, SDBV, BinVal, BudgetLinear, DisOM, DynamicBinVal, Heights, LeadingOnes,
                             Linear, OneMax, Parents)
from evopress.theory.mutation import Flips
from evopress.theory.strategies import select


def parents(*bits):
    x = np.array(bits, dtype=np.uint8)
    return Parents(x, x.sum(axis=1).astype(np.int64))


def offspring(*flip_sets):
    """One run, one generation, the given offspring as flip sets."""
    count = np.array([[[len(s) for s in flip_sets]]], dtype=np.int64)
    pos = np.array([p for s in flip_sets for p in s], dtype=np.int64)
    return Flips(count, pos)


def compare(fn, x, *flip_sets, rng=None):
    """(best offspring index, sign of f(best) - f(parent))."""
    p = parents(x)
    p.state = fn.start(p.x)
    scores, _ = fn.scores(rng or np.random.default_rng(0), p, offspring(*flip_sets))
    best, sign = select(scores, np.ones((1, 1, len(flip_sets)), dtype=bool))
    return int(best[0, 0]), int(sign[0, 0])


def test_onemax_and_linear_by_hand():
    x = [1, 0, 1, 0]
    assert compare(OneMax(4), x, [1]) == (0, 1)
    assert compare(OneMax(4), x, [0, 1]) == (0, 0)  # one up, one down: a tie
    assert compare(OneMax(4), x, [0], [1, 3], [1]) == (1, 1)
    w = Linear(4, np.array([1, 2, 3, 4]))
    assert compare(w, x, [1, 2]) == (0, -1)  # +2 - 3
    assert compare(w, x, [1, 2], [3], [0, 1]) == (1, 1)  # -1, +4, +1


def test_leading_ones_by_hand():
    x = [1, 1, 0, 1]
    assert compare(LeadingOnes(4), x, [2]) == (0, 1)  # 1111
    assert compare(LeadingOnes(4), x, [0]) == (0, -1)  # 0101
    assert compare(LeadingOnes(4), x, [3]) == (0, 0)  # 1100: LO unchanged
    assert compare(LeadingOnes(4), x, [0], [2, 3], [2]) == (2, 1)  # LO 0, 3, 4


def test_binval_is_lexicographic_by_hand():
    x = [0, 1, 0, 1]
    assert compare(BinVal(4), x, [0]) == (0, 1)  # 1101 > 0101
    assert compare(BinVal(4), x, [1]) == (0, -1)  # 0001 < 0101
    assert compare(BinVal(4), x, [1, 2]) == (0, -1)  # 0011: bit 1 decides
    assert compare(BinVal(4), x, [3], [2, 3], [2]) == (2, 1)  # 0100 < 0110 < 0111


def test_dynamic_binval_family_by_hand():
    # x = 0011: zeros at 0, 1; ones at 2, 3. Offspring {0, 2} flips one zero and one one.
    x = [0, 0, 1, 1]
    assert compare(ADBV(4), x, [0, 2]) == (0, 1)  # ADBV: any flipped zero wins
    assert compare(FDBV(4), x, [0, 2]) == (0, -1)  # FDBV: any flipped one loses
    assert compare(FDBV(4), x, [0]) == (0, 1)
    assert compare(SDBV(4), x, [0, 2]) == (0, -1)  # z = 2 = n/2 is not < n/2: FDBV
    assert compare(SDBV(4), [0, 1, 1, 1], [0, 1]) == (0, 1)  # z = 1 < n/2: ADBV
    assert compare(SDBV(4, threshold=1), [0, 1, 1, 1], [0, 1]) == (0, -1)  # switch moved: FDBV
    # ADBV among offspring: the zero ranked first (index order) wins; a flipped one hurts after that
    assert compare(ADBV(4), x, [1], [0, 3], [0]) == (2, 1)
    assert compare(FDBV(4), x, [2], [0], [0, 1]) == (2, 1)


def explicit_value(x_parent, y, key):
    """BinVal of y after ranking the positions by key (smaller key = higher weight), as a Python int."""
    order = sorted(range(len(y)), key=key)
    return sum(int(y[i]) << (len(y) - 1 - r) for r, i in enumerate(order))


@pytest.mark.parametrize("fn_name", ["BinVal", "ADBV", "FDBV", "SDBV"])
def test_scores_match_exact_integer_fitness(fn_name):
    rng = np.random.default_rng(3)
    n = 70  # beyond float precision: the comparison must stay exact
    fn = {"BinVal": BinVal, "ADBV": ADBV, "FDBV": FDBV, "SDBV": SDBV}[fn_name](n)
    for _ in range(200):
        x = rng.integers(0, 2, n).astype(np.uint8)
        z = n - int(x.sum())
        adversarial = fn_name == "ADBV" or (fn_name == "SDBV" and z < n / 2)
        key = {"BinVal": lambda i: i}.get(fn_name, (lambda i: (x[i], i)) if adversarial else (lambda i: (1 - x[i], i)))
        sets = [sorted(rng.choice(n, size=rng.integers(0, 4), replace=False).tolist()) for _ in range(6)]
        values = []
        for s in sets:
            y = x.copy()
            y[s] ^= 1
            values.append(explicit_value(x, y, key))
        parent = explicit_value(x, x, key)
        best, sign = compare(fn, x, *sets)
        assert best == values.index(max(values))
        assert sign == (max(values) > parent) - (max(values) < parent)


def test_dbv_accepts_with_probability_i_over_i_plus_j():
    fn, rng = DynamicBinVal(10), np.random.default_rng(4)
    x = np.array([[0, 0, 0, 1, 1, 1, 1, 1, 1, 1]] * 20000, dtype=np.uint8)
    p = Parents(x, x.sum(axis=1).astype(np.int64))
    flips = Flips(np.full((20000, 1, 1), 3), np.tile([0, 3, 4], 20000))  # i = 1 zero, j = 2 ones
    scores, _ = fn.scores(rng, p, flips)
    _, sign = select(scores, np.ones((20000, 1, 1), dtype=bool))
    assert abs((sign == 1).mean() - 1 / 3) < 0.015


def test_disom_noise_is_frozen_and_has_the_planted_law():
    fn = DisOM(64, Heights.exponential(0.4), p=0.2, seed=5)
    rng = np.random.default_rng(6)
    x = rng.integers(0, 2, (4000, 64)).astype(np.uint8)
    state = fn.start(x)
    assert abs((state["height"] > 0).mean() - 0.2) < 0.03
    assert abs(state["height"][state["height"] > 0].mean() - 2.5) < 0.25
    # an offspring's height equals the height of the same point evaluated from scratch
    p = Parents(x[:50], x[:50].sum(axis=1).astype(np.int64), {k: v[:50] for k, v in state.items()})
    flips = Flips(np.full((50, 1, 1), 2), np.tile([5, 9], 50))
    scores, aux = fn.scores(rng, p, flips)
    y = x[:50].copy()
    y[:, [5, 9]] ^= 1
    fresh = fn.start(y)
    assert np.array_equal(aux["height"][:, 0, 0], fresh["height"])
    gain = (y.sum(axis=1) + fresh["height"]) - (x[:50].sum(axis=1) + state["height"][:50])
    assert np.allclose(scores[:, 0, 0, 0], gain)
    # a clone scores exactly 0
    clone, _ = fn.scores(rng, p, Flips(np.zeros((50, 1, 1), dtype=np.int64), np.zeros(0, dtype=np.int64)))
    assert (clone == 0).all()


def test_disom_heights_and_target():
    u = np.linspace(0.001, 0.999, 999)
    assert np.all(Heights.uniform(4).quantile(u) <= 4)
    assert np.all(Heights.truncated(4.0).quantile(u) <= 4 + 1e-12)
    assert Heights.constant(2.0).quantile(u).max() == 2.0
    fn = DisOM(150)
    assert fn.goal == pytest.approx(150 - 150**0.15) and fn.planting == pytest.approx(0.3 / 150**0.5)
    assert round(fn.goal, 2) == 147.88


def test_budget_linear_start_and_optimum():
    fn = BudgetLinear(20, 5, seed=1)
    x = fn.init(np.random.default_rng(0), 100)
    assert (x.sum(axis=1) == 5).all()
    assert fn.optimum == sum(range(16, 21))  # weights are a permutation of 1..20
    best = (fn.weights > 15).astype(np.uint8)[None]
    assert fn.done(Parents(best, best.sum(axis=1))).all()
