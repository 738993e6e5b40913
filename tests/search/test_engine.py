import subprocess
import sys
from collections import Counter

import numpy as np
import pytest

from evopress.errors import InfeasibleBudgetError
from evopress.search import (Budget, Settings, Space, Stage, Unit, count_feasible, evolve,
                             exhaustive, feasible_genomes, random_best, select)
from evopress.search.mutation import level_switch, num_switches

from tests.search.synthetic import Linear, binary_space


def test_search_does_not_import_torch():
    code = "import sys, evopress.search; sys.exit(1 if 'torch' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_random_genomes_are_feasible_and_uniform(space, budget):
    rng = np.random.default_rng(0)
    seen = Counter(budget.random_genome(space, rng)[:8] for _ in range(5600))
    assert all(budget.satisfied(space, budget.random_genome(space, rng)) for _ in range(100))
    assert len(seen) == 28  # all C(8,2) attention subsets appear, roughly equally often
    assert max(seen.values()) < 2 * min(seen.values())


def test_mutation_keeps_budget_exactly(space, budget):
    rng = np.random.default_rng(1)
    genome = budget.random_genome(space, rng)
    cost = space.cost(genome)
    for _ in range(500):
        genome = level_switch(space, genome, rng, num_switches(rng))
        assert budget.satisfied(space, genome) and space.cost(genome) == cost


def test_switch_count_distribution_matches_reference():
    rng = np.random.default_rng(2)
    counts = Counter(num_switches(rng) for _ in range(90_000))
    for k, p in {1: 5 / 9, 2: 3 / 9, 3: 1 / 9}.items():
        assert abs(counts[k] / 90_000 - p) < 0.01


@pytest.mark.parametrize("seed", range(5))
def test_finds_optimum_of_separable_objective(space, budget, seed):
    f = Linear(space, seed)
    best = min(feasible_genomes(space, budget), key=lambda g: f([g], None)[0])
    result = evolve(space, budget, f, Settings(generations=30, offspring=16, seed=seed))
    assert result.best == best


@pytest.mark.parametrize("seed", range(3))
def test_finds_optimum_with_many_levels(seed):
    space = Space(tuple(Unit(f"u{i}", "all", ("0", "1", "2", "3"), (0, 1, 2, 3)) for i in range(10)))
    budget = Budget.of(all=12)
    weights = np.random.default_rng(seed + 10).normal(size=10)
    f = Linear(space, 0)
    f.tables = [w * np.arange(4) for w in weights]  # linear in the level: greedy fill is optimal
    best = exhaustive(space, budget, f, tokens=1).best
    order = np.argsort(weights)  # 12 levels = units with the 4 smallest weights at the top level
    assert best == tuple(3 if i in order[:4] else 0 for i in range(10))
    result = evolve(space, budget, f, Settings(generations=80, offspring=16, seed=seed))
    assert result.best == best


def test_infeasible_budget_is_a_clear_error(space):
    with pytest.raises(InfeasibleBudgetError, match="outside 0..8"):
        Budget.of(attn=9, mlp=2).validate(space)
    with pytest.raises(InfeasibleBudgetError, match="groups"):
        Budget.of(attn=1).validate(space)


def test_mixed_cost_tables_in_a_group_are_rejected():
    space = Space((Unit("a", "g", ("k", "d"), (1, 0)), Unit("b", "g", ("k", "d"), (2, 0))))
    with pytest.raises(InfeasibleBudgetError, match="cost tables"):
        Budget.of(g=1).validate(space)


def test_parent_joins_only_the_last_stage():
    calls = []

    def objective(genomes, fidelity):
        calls.append((fidelity.tokens, list(genomes)))
        return [float(sum(g)) for g in genomes]

    kids = [(1, 1), (0, 1), (1, 0), (2, 2)]
    survivors, fitness = select(kids, [(0, 0)], (Stage(2, 10), Stage(1, 100)), objective, lambda i: i)
    assert survivors == [(0, 0)] and fitness == [0.0]
    assert (0, 0) not in calls[0][1] and (0, 0) in calls[1][1]
    assert len(calls[1][1]) == 3


def test_exhaustive_counts_and_finds_the_best(space, budget):
    f = Linear(space, 7)
    assert count_feasible(space, budget) == 28 * 28 == len(set(feasible_genomes(space, budget)))
    result = exhaustive(space, budget, f, tokens=1)
    assert result.fitness == min(f(list(feasible_genomes(space, budget)), None))


def test_evopress_beats_random_on_a_larger_space():
    space = binary_space(16, 16)
    budget = Budget.of(attn=4, mlp=4)
    f = Linear(space, 3)
    evo = evolve(space, budget, f, Settings(generations=40, offspring=16, seed=0))
    rnd = random_best(space, budget, f, samples=64, tokens=2048, seed=0)
    assert evo.fitness < rnd.fitness
