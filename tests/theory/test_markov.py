"""The exact count-level chain: closed forms, and agreement with Monte-Carlo runs of the bit-level code."""

import math

import numpy as np
import pytest

from evopress.theory import markov
from evopress.theory.functions import ADBV, FDBV, SDBV, DynamicBinVal, LeadingOnes, OneMax
from evopress.theory.mutation import StandardBit
from evopress.theory.stats import mean_se
from evopress.theory.strategies import EA, evolve, one_plus_one

MAKE = {"OneMax": OneMax, "DBV": DynamicBinVal, "FDBV": FDBV, "ADBV": ADBV, "SDBV": SDBV}


def within(mean, se, exact, k=4.0):
    return abs(mean - exact) <= k * se


@pytest.mark.parametrize("name", markov.FUNCTIONS)
def test_transition_rows_are_distributions(name):
    P = markov.transition_matrix(name, 40)
    assert np.allclose(P.sum(axis=1), 1) and P.min() >= 0


def test_tiny_case_by_hand():
    # n = 1, p = 1: the only bit always flips; from z = 1 the optimum is one step away.
    assert markov.hitting_times("OneMax", 1, p=1.0).tolist() == [0.0, 1.0]
    assert markov.expected_runtime("OneMax", 1, p=1.0) == 0.5


def test_drift_closed_forms_and_the_switch_at_half():
    for n, p in ((10, 0.1), (11, 0.3), (100, 0.02), (101, 1 / 101)):
        assert np.allclose(markov.drift("ADBV", n, p), markov.drift_adbv(n, p), atol=1e-12)
        assert np.allclose(markov.drift("FDBV", n, p), markov.drift_fdbv(n, p), atol=1e-12)
        z = np.arange(1, n)
        below = markov.drift_adbv(n, p)[1:n] <= markov.drift_fdbv(n, p)[1:n] + 1e-12
        assert np.array_equal(below, z <= n / 2)
    assert markov.drift_adbv(50, 1 / 50)[1] == pytest.approx(1 / 50**2)


@pytest.mark.parametrize("name", markov.FUNCTIONS)
def test_chain_agrees_with_monte_carlo(name):
    n, runs = 24, 1500
    T = evolve(MAKE[name](n), one_plus_one(), runs, seed=11).generations - 1  # chain counts after the start
    mean, se = mean_se(T)
    assert within(mean, se, markov.expected_runtime(name, n))


def test_chain_agrees_with_monte_carlo_for_other_rates_and_thresholds():
    n, runs = 20, 1500
    for chi in (0.5, 1.5):
        T = evolve(ADBV(n), EA(1, True, mutation=StandardBit(chi)), runs, seed=12).generations - 1
        assert within(*mean_se(T), markov.expected_runtime("ADBV", n, p=chi / n))
    T = evolve(SDBV(n, threshold=n / 2 - 2), one_plus_one(), runs, seed=13).generations - 1
    assert within(*mean_se(T), markov.expected_runtime("SDBV", n, threshold=n / 2 - 2))


def test_leading_ones_matches_its_closed_form():
    """E[T] = (1/(2p²))((1−p)^(1−n) − (1−p)) from a uniform start (Böttcher, Doerr, Neumann 2010)."""
    n, p = 24, 1 / 24
    exact = 1 / (2 * p * p) * ((1 - p) ** (1 - n) - (1 - p))
    T = evolve(LeadingOnes(n), one_plus_one(), 800, seed=14).generations - 1
    assert within(*mean_se(T), exact)


def test_sdbv_runtime_grows_like_n_to_the_1_5():
    ratios = [markov.expected_runtime("SDBV", n) / n**1.5 for n in (200, 400, 800)]
    assert max(ratios) / min(ratios) < 1.01
    onemax = [markov.expected_runtime("OneMax", n) / (n * math.log(n)) for n in (200, 400, 800)]
    assert 2.3 < min(onemax) and max(onemax) < math.e
