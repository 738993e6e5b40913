"""The Python API the CLI wraps: a RunConfig in, a DropRun out, everything saved in a run directory.

    from evopress.api import drop
    from evopress.config import RunConfig, DropConfig
    run = drop(RunConfig(model="zoo:tiny", drop=DropConfig(target=0.25)))
    print(run.summary)
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import yaml

from evopress import __version__
from evopress.compress.depth import (DropPlan, default_generations, depth_budget, depth_space, drop_count,
                                     genome_from_plan, plan_from_genome)
from evopress.config import RunConfig, to_dict
from evopress.errors import RecipeError
from evopress.search import Journal, Settings, Stage, count_feasible, evolve, exhaustive, random_best
from evopress.search.loop import header
from evopress.session import Session, open_session
from evopress.sparsify import SparsifyRun, sparsify  # noqa: F401  (the API's second method)

BASELINES = ("shortgpt", "random", "exhaustive")


@dataclass
class MethodResult:
    name: str
    plan: DropPlan
    ppl: float
    fitness: float | None = None  # search fitness on calibration tokens, where the method has one
    seconds: float = 0.0


@dataclass
class DropRun:
    config: RunConfig
    run_dir: Path
    dense_ppl: float
    results: list[MethodResult]
    history: list[dict]
    protocol: dict
    export: dict | None = None
    summary: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def best(self) -> MethodResult:
        return self.results[0]


def settings_for(cfg: RunConfig, space, count: int) -> Settings:
    s = cfg.search
    gens = s.generations or default_generations(space, count)
    return Settings(generations=gens, offspring=s.offspring, stages=tuple(Stage(k, t) for k, t in s.stages),
                    initial=s.initial, initial_tokens=s.initial_tokens, max_switches=s.max_switches, seed=s.seed)


def _check(cfg: RunConfig) -> None:
    unknown = [b for b in cfg.baselines.names if b not in BASELINES]
    if unknown:
        raise RecipeError(f"unknown baseline {unknown[0]!r}; choose from {', '.join(BASELINES)}")


def _generation_line(total: int, full_cost: float, log: Callable[[str], None]) -> Callable[[dict], None]:
    def show(h: dict) -> None:
        speed = f"{h['tokens_per_s'] / 1e3:8.1f}k tok/s" if h.get("tokens_per_s") else "  (from journal)"
        label = "init" if h["phase"] == "init" else f"gen {h['gen']:>3}/{total}"
        log(f"{label:>12}  best fitness {h['fitness']:.5f}  kept {100 * h['cost'] / full_cost:.1f}% of block params  {speed}")
    return show


def search_depth(session: Session, cfg: RunConfig, log: Callable[[str], None] = print):
    """EvoPress depth search on the session's calibration data; returns (space, count, result)."""
    adapter = session.adapter
    space = depth_space(adapter.num_blocks, adapter.sublayer_params("attn"), adapter.sublayer_params("mlp"),
                        cfg.drop.granularity)
    count = drop_count(cfg.drop.target, adapter.num_blocks)
    budget = depth_budget(space, count)
    settings = settings_for(cfg, space, count)
    journal = Journal(Path(cfg.run_dir) / "journal.jsonl",
                      header(space, budget, settings, {"model": session.fingerprint, "data": session.protocol,
                                                       "fitness": cfg.search.fitness, "topk": cfg.search.topk,
                                                       "granularity": cfg.drop.granularity}))
    objective = session.depth_objective(lambda g: plan_from_genome(space, g), cfg)
    log(f"EvoPress: drop {count} of {adapter.num_blocks} per kind ({cfg.drop.granularity}), "
        f"{settings.generations} generations x {settings.offspring} offspring, stages {cfg.search.stages}")
    result = evolve(space, budget, objective, settings, journal, _generation_line(settings.generations, space.cost((0,) * len(space)), log))
    return space, budget, count, result, journal, objective


def run_baselines(session: Session, cfg: RunConfig, space, budget, count, journal, objective,
                  log: Callable[[str], None] = print) -> list[tuple[str, DropPlan, float | None, float]]:
    """The baselines on the same data: ShortGPT, random best-of-N, exhaustive (when small)."""
    out = []
    final_tokens = cfg.search.stages[-1][1]
    for name in cfg.baselines.names:
        t0 = time.perf_counter()
        if name == "shortgpt":
            plan = DropPlan.blocks(session.adapter.num_blocks, session.shortgpt(count))
            out.append(("ShortGPT", plan, None, time.perf_counter() - t0))
        elif name == "random":
            n = cfg.baselines.random_samples
            r = random_best(space, budget, objective, n, final_tokens, cfg.search.seed, journal)
            out.append((f"random best-of-{n}", plan_from_genome(space, r.best), r.fitness, time.perf_counter() - t0))
        elif name == "exhaustive":
            n = count_feasible(space, budget)
            if n > cfg.baselines.exhaustive_limit:
                log(f"exhaustive: {n} configurations exceed the limit {cfg.baselines.exhaustive_limit}, skipped")
                continue
            r = exhaustive(space, budget, objective, final_tokens, cfg.baselines.exhaustive_limit, journal=journal)
            out.append(("exhaustive", plan_from_genome(space, r.best), r.fitness, time.perf_counter() - t0))
        log(f"baseline {out[-1][0]}: {out[-1][1].describe()}")
    return out


def drop(cfg: RunConfig, log: Callable[[str], None] = print) -> DropRun:
    """Search which sublayers (or blocks) to drop, compare with baselines, evaluate, export."""
    from evopress.distributed import for_rank

    _check(cfg)
    cfg, log = for_rank(cfg, log)
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    session = open_session(cfg, log)
    t0 = time.perf_counter()
    space, budget, count, result, journal, objective = search_depth(session, cfg, log)
    evo_seconds = time.perf_counter() - t0
    best = plan_from_genome(space, result.best)
    methods = [("EvoPress", best, result.fitness, evo_seconds)]
    methods += run_baselines(session, cfg, space, budget, count, journal, objective, log)
    log("evaluating held-out perplexity ...")
    dense_ppl = session.heldout_ppl(DropPlan.dense(session.adapter.num_blocks))
    results = [MethodResult(name, plan, session.heldout_ppl(plan), fit, sec) for name, plan, fit, sec in methods]
    session.adapter.apply_plan(best)
    run = DropRun(cfg, run_dir, dense_ppl, results, result.history, session.protocol)
    run.export = session.export(best, run_dir / "model", cfg.export_format) if cfg.export_format != "none" else None
    write_report(run, space, genome_from_plan(space, best))
    log(run.summary)
    return run


def write_report(run: DropRun, space, genome) -> None:
    from evopress.report import convergence_plot, profile_plot, table

    rows = [{"method": "dense", "ppl": run.dense_ppl, "dropped": "-"}]
    rows += [{"method": r.name, "ppl": r.ppl, "fitness": r.fitness if r.fitness is not None else "-",
              "dropped": " ".join(f"{i}:{d}" for i, d in enumerate(r.plan.describe()) if d != "none"),
              "seconds": r.seconds} for r in run.results]
    run.summary = table(rows, [("method", "method"), ("ppl", "held-out ppl"), ("fitness", "search KL"),
                               ("seconds", "seconds"), ("dropped", "dropped (block:sublayers)")])
    (run.run_dir / "summary.txt").write_text(run.summary + "\n")
    best = run.best
    (run.run_dir / "plan.json").write_text(json.dumps(
        {**best.plan.to_dict(), "blocks": best.plan.describe(), "genome": list(genome),
         "units": [u.name for u in space.units]}, indent=2))
    profile_plot({r.name: r.plan.to_dict() for r in run.results}, run.run_dir / "profile.png",
                 f"Dropped sublayers ({run.config.drop.granularity}, target {run.config.drop.target})")
    ylabel = "KL to dense (nats)" if run.config.search.fitness == "kl" else "perplexity"
    convergence_plot(run.history, run.run_dir / "convergence.png", ylabel)
    (run.run_dir / "result.json").write_text(json.dumps({
        "evopress_version": __version__, "python": platform.python_version(),
        "config": to_dict(run.config), "protocol": run.protocol, "dense_ppl": run.dense_ppl,
        "results": [{"method": r.name, "ppl": r.ppl, "fitness": r.fitness, "seconds": r.seconds,
                     "plan": r.plan.to_dict(), "blocks": r.plan.describe()} for r in run.results],
        "history": run.history, "export": run.export}, indent=2, default=str))
