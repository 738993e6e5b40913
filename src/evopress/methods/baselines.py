"""Baselines every method with per-unit levels has, on the run's own data and budget.

Each takes the method and the run and returns `{"name", "genome", "fitness"?, ...}` (fitness:
the baseline's own search value, where it has one), or None when it does not apply (a message
says why). Method-specific baselines (ShortGPT, OWL) live in their method's file.

- uniform: the same level everywhere (`Method.uniform`), where the budget allows it;
- random: the best of N random feasible genomes on the final stage's tokens;
- dp: a knapsack over the method's per-unit errors (EvoPress §4.3's "DP" baseline);
- exhaustive: every feasible genome, when there are few enough;
- untrained: the same EvoPress search with its training stages' training left out (DarwinLM's
  ablation of training-aware selection), in its own journal.
"""

from __future__ import annotations

import dataclasses

from evopress.search import Budget, CostBudget, Stage, count_feasible, evolve, exhaustive, random_best
from evopress.search.knapsack import knapsack


def uniform(method, run) -> dict | None:
    genome = method.uniform(run)
    if genome is None:
        run.log(f"uniform: method {method.name!r} has no uniform genome at this budget, skipped")
        return None
    return {"name": "uniform", "genome": genome}


def random(method, run) -> dict:
    n = run.cfg.baselines.random_samples
    r = random_best(run.space, run.budget, run.objective, n, run.final_tokens, run.cfg.search.seed, run.journal)
    return {"name": f"random best-of-{n}", "genome": r.best, "fitness": r.fitness}


def dp(method, run) -> dict | None:
    errors = method.errors(run)
    if errors is None or not isinstance(run.budget, CostBudget):
        run.log(f"dp: method {method.name!r} has no per-unit errors under a cost budget, skipped")
        return None
    b = run.budget
    return {"name": "DP (layer errors)", "genome": knapsack(run.space, errors, b.high, (b.high - b.low) / 2)}


def exhaustive_search(method, run) -> dict | None:
    limit = run.cfg.baselines.exhaustive_limit
    if not isinstance(run.budget, Budget):
        run.log("exhaustive: enumerates level-sum budgets only, skipped")
        return None
    n = count_feasible(run.space, run.budget)
    if n > limit:
        run.log(f"exhaustive: {n} configurations exceed the limit {limit}, skipped")
        return None
    r = exhaustive(run.space, run.budget, run.objective, run.final_tokens, limit, journal=run.journal)
    return {"name": "exhaustive", "genome": r.best, "fitness": r.fitness}


def untrained(method, run) -> dict | None:
    settings = run.settings
    if not any(st.train_tokens for st in settings.stages):
        run.log("untrained: the search has no training stages, skipped")
        return None
    settings = dataclasses.replace(settings, stages=tuple(Stage(st.survivors, st.tokens) for st in settings.stages))
    start = method.uniform(run) if method.start_from == "uniform" else None
    r = evolve(run.space, run.budget, run.objective, settings, run.new_journal("journal-untrained.jsonl", settings),
               start=start)
    return {"name": "EvoPress without training", "genome": r.best, "fitness": r.fitness}


SHARED = {"uniform": uniform, "random": random, "dp": dp, "exhaustive": exhaustive_search, "untrained": untrained}
