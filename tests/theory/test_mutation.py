"""Mutation operators: the laws of §3.1, and the level switch against the search engine's own."""

from collections import Counter

import numpy as np

from evopress.search import Space, Unit
from evopress.search.mutation import level_switch, num_switches
from evopress.theory.mutation import Flips, HeavyTailed, LevelSwitch, StandardBit, distinct_positions, switch_counts


def offspring_sets(flips: Flips):
    c = flips.count.reshape(-1)
    return [tuple(sorted(flips.pos[s:s + k].tolist())) for s, k in zip(flips.start, c)]


def test_flip_lists_index_their_offspring():
    flips = Flips(np.array([[[2, 0, 1]], [[1, 3, 0]]]), np.array([4, 1, 7, 0, 2, 5, 6]))
    assert offspring_sets(flips) == [(1, 4), (), (7,), (0,), (2, 5, 6), ()]
    assert flips.run.tolist() == [0, 0, 0, 1, 1, 1, 1]
    assert flips.total(np.ones(7)).tolist() == [[[2, 0, 1]], [[1, 3, 0]]]
    assert flips.dense(flips.pos)[1, 0, 1].tolist() == [2, 5, 6]
    which, pos = flips.of(np.array([4, 0]))
    assert which.tolist() == [0, 0, 0, 1, 1] and pos.tolist() == [2, 5, 6, 4, 1]


def test_distinct_positions_are_uniform_sets():
    flips = distinct_positions(np.random.default_rng(0), np.full(50_000, 3), 6)
    sets = Counter(offspring_sets(flips))
    assert len(sets) == 20 and all(len(set(s)) == 3 for s in sets)
    assert max(sets.values()) < 1.15 * min(sets.values())
    wide = distinct_positions(np.random.default_rng(1), np.array([9, 10, 2]), 10)  # > n/4: permutation path
    assert [len(set(s)) for s in offspring_sets(wide)] == [9, 10, 2]


def test_standard_bit_mutation_law():
    n = 50
    flips = StandardBit()(np.random.default_rng(2), np.zeros((400, n), dtype=np.uint8), (50, 2))
    assert flips.count.shape == (400, 50, 2)
    freq = np.bincount(flips.count.ravel(), minlength=4)[:4] / flips.count.size
    expected = [(1 - 1 / n) ** n, (1 - 1 / n) ** (n - 1), 0.5 * (n - 1) / n * (1 - 1 / n) ** (n - 2)]
    assert np.allclose(freq[:3], expected, atol=0.005)  # clones (K = 0) are kept
    assert np.allclose(np.bincount(flips.pos, minlength=n) / flips.pos.size, 1 / n, atol=0.004)


def test_heavy_tailed_mutation_never_clones():
    n, beta = 40, 1.5
    flips = HeavyTailed(beta)(np.random.default_rng(3), np.zeros((1000, n), dtype=np.uint8), (20, 1))
    assert flips.count.min() >= 1 and flips.count.max() <= n
    zeta = (np.arange(1, n + 1, dtype=float) ** -beta).sum()
    assert abs((flips.count == 1).mean() - 1 / zeta) < 0.01
    assert all(len(set(s)) == len(s) for s in offspring_sets(flips)[:2000])


def test_switch_counts_match_the_engines_num_switches():
    rng = np.random.default_rng(4)
    ours = np.bincount(switch_counts(rng, 90_000).ravel(), minlength=4)[1:] / 90_000
    engine = Counter(num_switches(rng) for _ in range(30_000))
    assert np.allclose(ours, [5 / 9, 3 / 9, 1 / 9], atol=0.01)
    assert np.allclose([engine[m] / 30_000 for m in (1, 2, 3)], [5 / 9, 3 / 9, 1 / 9], atol=0.015)


def test_level_switch_keeps_the_budget_and_redraws_copies():
    rng = np.random.default_rng(5)
    x = np.zeros((200, 12), dtype=np.uint8)
    x[:, :4] = 1
    flips = LevelSwitch()(rng, x, (3, 8))
    assert flips.count.min() >= 2 and flips.count.max() <= 6
    y = np.repeat(x, 24, axis=0)
    y[flips.owner, flips.pos] ^= 1
    assert (y.sum(axis=1) == 4).all()
    sets = offspring_sets(flips)
    for g in range(0, len(sets), 8):  # λ = 8 distinct offspring per generation
        assert len(set(sets[g:g + 8])) == 8


def test_level_switch_has_the_search_engines_offspring_law():
    """From one parent, the vectorised operator and `evopress.search.mutation.level_switch` give the same offspring."""
    n, draws = 6, 40_000
    parent = (1, 1, 1, 0, 0, 0)
    space = Space(tuple(Unit(f"u{i}", "g", ("0", "1"), (0.0, 1.0)) for i in range(n)))
    rng = np.random.default_rng(6)
    engine = Counter()
    while sum(engine.values()) < draws:
        child = level_switch(space, parent, rng, num_switches(rng))
        if child != parent:  # EvoPress.ask rejects copies of the parent
            engine[child] += 1
    flips = LevelSwitch()(rng, np.array([parent] * draws, dtype=np.uint8), (1, 1))
    ours = Counter()
    for s in offspring_sets(flips):
        child = list(parent)
        for i in s:
            child[i] ^= 1
        ours[tuple(child)] += 1
    assert set(engine) == set(ours) and len(ours) == 19  # every other 3-subset of 6
    diff = max(abs(engine[c] - ours[c]) / draws for c in ours)
    assert diff < 0.006
