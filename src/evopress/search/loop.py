"""The search loop: ask → multi-stage selection → tell, journaled so it can resume.

Two phases make an EvoPress run: the initial parent is the best of N random feasible genomes on
a small token budget, then (1+λ) generations with multi-step selection (arXiv 2410.14649,
Alg. 1). Data draws are keyed by (phase, generation, stage), so a replay asks for the same tokens.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from evopress.search.budget import Budget, CostBudget
from evopress.search.journal import Journal
from evopress.search.selection import Stage, select
from evopress.search.space import Genome, Space
from evopress.search.strategies import EvoPress, RandomSearch, State, Strategy

PHASES = {"init": 1, "evolve": 2, "random": 3, "exhaustive": 4}


def draw_key(phase: str, generation: int, stage: int) -> int:
    return PHASES[phase] * 10_000_000 + generation * 100 + stage


@dataclass(frozen=True)
class Settings:
    """EvoPress search settings; defaults are the reference's depth-pruning schedule."""

    generations: int = 32
    offspring: int = 32
    stages: tuple[Stage, ...] = (Stage(2, 2048), Stage(1, 32768))
    initial: int = 64
    initial_tokens: int = 2048
    max_switches: int = 3
    seed: int = 0


@dataclass
class Result:
    best: Genome
    fitness: float
    history: list[dict] = field(default_factory=list)


def _stage_list(stages) -> list[list[int]]:
    return [[s.survivors, s.tokens] + ([s.train_tokens] if s.train_tokens else []) for s in stages]


def run(strategy: Strategy, state: State, objective: Callable, stages: tuple[Stage, ...],
        generations: int, journal: Journal, phase: str, space: Space,
        on_generation: Callable[[dict], None] | None = None) -> tuple[State, list[dict]]:
    """Run `generations` ask/select/tell rounds from `state`; return the final state and history."""
    history = []
    for _ in range(generations):
        gen = state.generation + 1
        t0, before = time.perf_counter(), journal.replayed
        evaluated, trained = [0], [0]

        def evaluate(genomes, fidelity, _gen=gen):
            evaluated[0] += len(genomes) * fidelity.tokens
            trained[0] += len(genomes) * fidelity.train_tokens
            return journal.evaluate(objective, genomes, fidelity, phase=phase, gen=_gen)

        children = strategy.ask(state)
        survivors, fitness = select(children, strategy.carry(state), stages, evaluate,
                                    lambda i, _gen=gen: draw_key(phase, _gen, i))
        state = strategy.tell(state, survivors, fitness)
        seconds = time.perf_counter() - t0
        entry = journal.record(
            (phase, gen), phase=phase, gen=gen, parent=list(state.parent), fitness=state.fitness,
            cost=space.cost(state.parent), candidates=len(children), tokens=evaluated[0],
            **({"train_tokens": trained[0]} if trained[0] else {}),
            seconds=seconds, tokens_per_s=evaluated[0] / seconds if journal.replayed == before else None)
        history.append(entry)
        if on_generation is not None:
            on_generation(entry)
        if not children:  # nothing new to try: the space around the parent is exhausted
            break
    return state, history


def header(space: Space, budget: Budget | CostBudget, settings: Settings, extra: dict) -> dict:
    return {"space": space.fingerprint(), "budget": budget.describe(),
            "offspring": settings.offspring, "stages": _stage_list(settings.stages),
            "initial": [settings.initial, settings.initial_tokens],
            "max_switches": settings.max_switches, "seed": settings.seed, **extra}


def evolve(space: Space, budget: Budget | CostBudget, objective: Callable, settings: Settings,
           journal: Journal | None = None, on_generation: Callable[[dict], None] | None = None,
           start: Genome | None = None) -> Result:
    """EvoPress: random best-of-N initialisation, then (1+λ) generations. Lower fitness is better.

    With `start` the first parent is that genome (the reference starts its sparsity search from
    the uniform profile) and the random initialisation is skipped.
    """
    budget.validate(space)
    journal = journal or Journal(None, header(space, budget, settings, {}))
    rng = np.random.default_rng(settings.seed)
    if start is not None:
        if not budget.satisfied(space, start):
            raise ValueError("the start genome does not meet the budget")
        state, history = State(parent=tuple(start), rng=rng), []
    else:
        state = State(parent=budget.random_genome(space, rng), rng=rng)
        init = RandomSearch(space, budget, samples=settings.initial)
        state, history = run(init, state, objective, (Stage(1, settings.initial_tokens),), 1,
                             journal, "init", space, on_generation)
        state = State(parent=state.parent, fitness=state.fitness, generation=0, rng=rng)
    strategy = EvoPress(space, budget, offspring=settings.offspring, max_switches=settings.max_switches)
    state, more = run(strategy, state, objective, settings.stages, settings.generations,
                      journal, "evolve", space, on_generation)
    return Result(state.parent, state.fitness, history + more)


def random_best(space: Space, budget: Budget | CostBudget, objective: Callable, samples: int, tokens: int,
                seed: int = 0, journal: Journal | None = None) -> Result:
    """Best of `samples` random feasible genomes, all scored on the same `tokens` tokens."""
    budget.validate(space)
    journal = journal or Journal(None, {"space": space.fingerprint(), "random": [samples, tokens, seed]})
    rng = np.random.default_rng(seed)
    state = State(parent=budget.random_genome(space, rng), rng=rng)
    state, history = run(RandomSearch(space, budget, samples), state, objective,
                         (Stage(1, tokens),), 1, journal, "random", space)
    return Result(state.parent, state.fitness, history)
