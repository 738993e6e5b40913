"""The sparsity pipeline: database → EvoPress search and baselines → held-out evaluation → export.

    from evopress.api import sparsify
    from evopress.config import RunConfig, SparsityConfig
    run = sparsify(RunConfig(method="sparsify", sparsity=SparsityConfig(target=0.6)))

Each step can run alone on a run directory (`steps`): "db" builds or resumes the variant store,
"search" runs EvoPress and the baselines and writes plans.json, "eval" scores the plans on
held-out data, "export" writes the EvoPress model (dense with zeros) plus its profile and an
llm-compressor recipe. EvoPress §2 (arXiv 2410.14649) is the method; §4.2–4.3 the baselines.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import yaml

from evopress.compress.sparsity import (SparsityGrid, nearest_genome, numels, overall_sparsity, profile,
                                        sparsity_budget, sparsity_space, uniform_genome, unit_table)
from evopress.config import RunConfig, to_dict
from evopress.errors import RecipeError
from evopress.search import Journal, Settings, Stage, evolve, random_best
from evopress.search.knapsack import knapsack
from evopress.search.loop import header
from evopress.session import Session, open_session

STEPS = ("db", "search", "eval", "export")
BASELINES = ("uniform", "owl", "dp", "random")


@dataclass
class SparsifyRun:
    config: RunConfig
    run_dir: Path
    plans: dict = field(default_factory=dict)  # method -> {"genome", "fitness", "seconds", ...}
    dense_ppl: float | None = None
    history: list[dict] = field(default_factory=list)
    export: dict | None = None
    summary: str = ""


def grid_for(cfg: RunConfig) -> SparsityGrid:
    s = cfg.sparsity
    if s.grid:
        if len(s.grid) != 3:
            raise RecipeError(f"sparsity.grid is (low, high, step), got {list(s.grid)}")
        return SparsityGrid(s.grid[0], s.grid[1], s.grid[2], min(s.small_step, s.grid[2]))
    return SparsityGrid(step=0.025, small_step=s.small_step).around(s.target)


def database_dir(cfg: RunConfig) -> Path:
    return Path(cfg.sparsity.database or Path(cfg.run_dir) / "database")


def open_store(session: Session, cfg: RunConfig, log: Callable[[str], None] = print, build: bool = True):
    """The run's variant store, built (or finished) first when `build` is set."""
    from evopress.database.build import build_sparsity_store, matrices
    from evopress.database.store import VariantStore

    s = cfg.sparsity
    grid = grid_for(cfg)
    tokens = session.calibration
    if s.database_tokens:
        rows = max(1, s.database_tokens // tokens.shape[1])
        tokens = tokens[:rows]
    config = {"builder": s.builder, "grid": [grid.low, grid.high, grid.step, grid.small_step, grid.small_fraction],
              "blocksize": s.blocksize, "damp": s.damp, "calibration": session.protocol["calibration"],
              "tokens": int(tokens.numel()), "dtype": session.protocol["dtype"]}
    store = VariantStore.create_or_open(database_dir(cfg), session.fingerprint, config,
                                        unit_table(matrices(session.adapter), grid))
    if build and not store.complete:
        build_sparsity_store(session.adapter, tokens, store, s.builder, session.device,
                             session.batch_size, s.blocksize, s.damp, log)
    store.require_complete()
    return store


def _settings(cfg: RunConfig) -> Settings:
    s = cfg.search
    return Settings(generations=s.generations or 200, offspring=s.offspring,
                    stages=tuple(Stage(k, t) for k, t in s.stages), initial=0, initial_tokens=s.initial_tokens,
                    max_switches=s.max_switches, seed=s.seed)


def _generation_line(total: int, log: Callable[[str], None], total_weights: int) -> Callable[[dict], None]:
    def show(h: dict) -> None:
        speed = f"{h['tokens_per_s'] / 1e3:8.1f}k tok/s" if h.get("tokens_per_s") else "  (from journal)"
        log(f"gen {h['gen']:>4}/{total}  best KL {h['fitness']:.5f}  "
            f"sparsity {100 * (1 - h['cost'] / total_weights):.2f}%  {speed}")
    return show


def _objective(session: Session, cfg: RunConfig, bank):
    """KL of candidates stacked from their first changed block (`evopress.eval.prefix`), or the plain
    objective (`Session.search_objective`)."""
    from evopress.eval.prefix import PrefixKL

    return session.search_objective(
        cfg, bank.apply,
        lambda **options: PrefixKL(session.adapter, bank, session.calibration, session.targets(cfg.search.topk),
                                   **options))


class SparsitySearch:
    """The space, budget, bank and objective of one sparsity run, shared by EvoPress and baselines."""

    def __init__(self, session: Session, cfg: RunConfig, store, log: Callable[[str], None] = print):
        from evopress.database.bank import SparseBank

        self.session, self.cfg, self.store, self.log = session, cfg, store, log
        self.space = sparsity_space(store.units)
        self.numels = numels(store.units)
        self.budget = sparsity_budget(self.space, self.numels, cfg.sparsity.target)
        t0 = time.perf_counter()
        self.bank = SparseBank(session.adapter, store)
        self.bank.restore()
        log(f"variants: {sum(len(v) for v in self.bank.variants.values())} levels of {len(self.space)} layers "
            f"re-derived from the database in {time.perf_counter() - t0:.1f}s "
            f"({self.bank.nbytes() / 2**30:.2f} GiB resident)")
        self.objective = _objective(session, cfg, self.bank)  # teacher targets while dense
        self.settings = _settings(cfg)
        extra = {"model": session.fingerprint, "data": session.protocol, "fitness": cfg.search.fitness,
                 "topk": cfg.search.topk, "database": store.manifest["config"], "target": cfg.sparsity.target}
        self.journal = Journal(Path(cfg.run_dir) / "journal.jsonl", header(self.space, self.budget,
                                                                         self.settings, extra))
        self.final_tokens = cfg.search.stages[-1][1]

    def rng(self, salt: int) -> np.random.Generator:
        return np.random.default_rng([self.cfg.search.seed, salt])

    def uniform(self):
        return uniform_genome(self.space, self.budget, self.cfg.sparsity.target, self.rng(1))

    def evopress(self) -> dict:
        t0 = time.perf_counter()
        self.log(f"EvoPress: {100 * self.cfg.sparsity.target:.1f}% average sparsity over "
                 f"{sum(self.numels):,} weights in {len(self.space)} layers; {self.settings.generations} "
                 f"generations x {self.settings.offspring} offspring, stages {self.cfg.search.stages}")
        show = _generation_line(self.settings.generations, self.log, sum(self.numels))
        result = evolve(self.space, self.budget, self.objective, self.settings, self.journal, show,
                        start=self.uniform())
        return {"genome": list(result.best), "fitness": result.fitness, "seconds": time.perf_counter() - t0,
                "history": result.history}

    def score(self, genome, phase_gen: int) -> float:
        from evopress.search import Fidelity
        from evopress.search.loop import draw_key

        fidelity = Fidelity(self.final_tokens, draw_key("random", phase_gen, 0))
        return self.journal.evaluate(self.objective, [tuple(genome)], fidelity, phase="baseline")[0]

    def owl(self) -> dict:
        """OWL with (λ, M) chosen by KL on calibration data over the reference's 5 × 4 grid."""
        from evopress.compress.owl import LAMBDAS, MS, block_sparsities, outlier_density

        blocks = sorted({u["block"] for u in self.store.units})
        names = {b: [u["name"] for u in self.store.units if u["block"] == b] for b in blocks}
        bank, target = self.bank, self.cfg.sparsity.target
        best = None
        for m in MS:
            lod = [outlier_density([bank.dense[n] for n in names[b]], [bank.act_sq[n] for n in names[b]], m)
                   for b in blocks]
            for lam in LAMBDAS:
                per_block = dict(zip(blocks, block_sparsities(lod, target, lam)))
                wanted = [per_block[u["block"]] for u in self.store.units]
                genome = nearest_genome(self.space, wanted)
                if not self.budget.satisfied(self.space, genome):
                    genome = self.budget.repair(self.space, genome, self.rng(2))
                fitness = self.score(genome, 0)
                if best is None or fitness < best["fitness"]:
                    best = {"genome": list(genome), "fitness": fitness, "lambda": lam, "M": m}
        self.log(f"OWL: best lambda={best['lambda']} M={best['M']} of {len(LAMBDAS) * len(MS)} (calibration KL)")
        return best

    def dp(self) -> dict:
        errors = self.store.errors()
        table = [errors[u.name] for u in self.space.units]
        genome = knapsack(self.space, table, self.budget.high, (self.budget.high - self.budget.low) / 2)
        return {"genome": list(genome), "fitness": self.score(genome, 0)}

    def random(self) -> dict:
        r = random_best(self.space, self.budget, self.objective, 64, self.final_tokens, self.cfg.search.seed,
                        self.journal)
        return {"genome": list(r.best), "fitness": r.fitness}

    def baseline(self, name: str) -> dict:
        t0 = time.perf_counter()
        if name == "uniform":
            g = self.uniform()
            out = {"genome": list(g), "fitness": self.score(g, 0)}
        else:
            out = getattr(self, name)()
        out["seconds"] = time.perf_counter() - t0
        return out


def _check(cfg: RunConfig, steps) -> None:
    bad = [s for s in steps if s not in STEPS]
    if bad:
        raise RecipeError(f"unknown step {bad[0]!r}; choose from {', '.join(STEPS)}")
    bad = [b for b in cfg.sparsity.baselines if b not in BASELINES]
    if bad:
        raise RecipeError(f"unknown sparsity baseline {bad[0]!r}; choose from {', '.join(BASELINES)}")
    if not 0 < cfg.sparsity.target < 1:
        raise RecipeError(f"sparsity target {cfg.sparsity.target} must be a fraction in (0, 1), e.g. 0.6")


def _plans_path(cfg: RunConfig) -> Path:
    return Path(cfg.run_dir) / "plans.json"


def _load_plans(cfg: RunConfig) -> dict:
    path = _plans_path(cfg)
    if not path.is_file():
        raise RecipeError(f"no search results at {path}; run the 'search' step first")
    return json.loads(path.read_text())


def _save_plans(cfg: RunConfig, plans: dict) -> None:
    """plans.json: each method's genome, fitness and (after 'eval') held-out perplexity; 'dense' too."""
    path = _plans_path(cfg)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(plans, indent=1))
    tmp.replace(path)


def search_step(search: SparsitySearch, cfg: RunConfig) -> dict:
    plans = {"EvoPress": search.evopress()}
    names = {"uniform": "uniform", "owl": "OWL", "dp": "DP (layer errors)", "random": "random best-of-64"}
    for b in cfg.sparsity.baselines:
        plans[names[b]] = search.baseline(b)
        search.log(f"baseline {names[b]}: calibration KL {plans[names[b]]['fitness']:.5f}")
    for p in plans.values():
        p["sparsity"] = overall_sparsity(search.space, tuple(p["genome"]), search.numels)
    _save_plans(cfg, plans)
    return plans


def eval_step(search: SparsitySearch, plans: dict, log: Callable[[str], None]) -> float:
    from evopress.eval.metrics import perplexity

    session = search.session
    log("evaluating held-out perplexity ...")
    search.bank.restore()
    dense = perplexity(session.model, session.heldout, batch_size=session.batch_size)
    for p in plans.values():
        search.bank.apply(p["genome"])
        p["ppl"] = perplexity(session.model, session.heldout, batch_size=session.batch_size)
    return dense


def export_step(search: SparsitySearch, plans: dict, cfg: RunConfig) -> dict:
    from evopress.compress.depth import DropPlan
    from evopress.export import export
    from evopress.export.sparsity import measure, write_profile

    genome = tuple(plans["EvoPress"]["genome"])
    search.bank.apply(genome)
    adapter, out = search.session.adapter, Path(cfg.run_dir) / "model"
    report = export(adapter, DropPlan.dense(adapter.num_blocks), search.session.tokenizer, out, overwrite=True)
    layers = profile(search.space, genome)
    overall = overall_sparsity(search.space, genome, search.numels)
    write_profile(out, layers, cfg.sparsity.target, overall, cfg.sparsity.builder)
    measured = measure(out, list(layers))
    total = sum(search.numels)
    measured_overall = sum(measured[u.name] * n for u, n in zip(search.space.units, search.numels)) / total
    worst = max(abs(measured[n] - s) for n, s in layers.items())
    search.log(f"exported {out}: measured sparsity {100 * measured_overall:.3f}% (target "
               f"{100 * cfg.sparsity.target:.1f}%), largest per-layer deviation from its level {100 * worst:.4f} pp")
    return {"path": str(report.path), "bytes_on_disk": report.bytes_on_disk, "measured_overall": measured_overall,
            "measured_max_layer_deviation": worst, "measured": measured}


def sparsify(cfg: RunConfig, log: Callable[[str], None] = print, steps=STEPS) -> SparsifyRun:
    """Unstructured sparsity end to end (or the listed `steps`), all in `cfg.run_dir`.

    Under torchrun, process 0 builds the database and every process then runs the same search,
    sharing out the candidates; the other processes stop after the search."""
    from evopress.distributed import barrier, for_rank, world

    _check(cfg, steps)
    cfg = replace(cfg, sparsity=replace(cfg.sparsity, database=str(database_dir(cfg))))  # one store for all ranks
    cfg, log = for_rank(cfg, log)
    rank = world()[0]
    if rank > 0:
        steps = tuple(s for s in steps if s == "search") or ("db",)
    run = SparsifyRun(cfg, Path(cfg.run_dir))
    run.run_dir.mkdir(parents=True, exist_ok=True)
    (run.run_dir / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    session = open_session(cfg, log)
    if rank == 0:
        store = open_store(session, cfg, log, build="db" in steps)
    barrier()
    if rank > 0:
        store = open_store(session, cfg, log, build=False)
    log(f"database {store.path}: {store.nbytes() / 2**20:.1f} MiB, {len(store.units)} layers")
    if steps == ("db",):
        return run
    search = SparsitySearch(session, cfg, store, log)
    plans = search_step(search, cfg) if "search" in steps else _load_plans(cfg)
    if "eval" in steps:
        plans["dense"] = {"ppl": eval_step(search, {k: v for k, v in plans.items() if k != "dense"}, log)}
        _save_plans(cfg, plans)
    run.dense_ppl = plans.pop("dense", {}).get("ppl")
    run.history = plans["EvoPress"].get("history", [])
    run.plans = {k: {kk: vv for kk, vv in v.items() if kk != "history"} for k, v in plans.items()}
    if "export" in steps and cfg.export_format != "none":
        run.export = export_step(search, run.plans, cfg)
    write_report(run, search)
    log(run.summary)
    return run


def write_report(run: SparsifyRun, search: SparsitySearch) -> None:
    from evopress import __version__
    from evopress.report import convergence_plot, sparsity_plot, table

    rows = [{"method": "dense", "ppl": run.dense_ppl if run.dense_ppl is not None else "-", "sparsity": 0.0}]
    rows += [{"method": name, "ppl": p.get("ppl", "-"), "fitness": p["fitness"], "sparsity": 100 * p["sparsity"],
              "seconds": p["seconds"]} for name, p in run.plans.items()]
    run.summary = table(rows, [("method", "method"), ("ppl", "held-out ppl"), ("fitness", "calibration KL"),
                               ("sparsity", "sparsity %"), ("seconds", "seconds")])
    (run.run_dir / "summary.txt").write_text(run.summary + "\n")
    blocks = [u["block"] for u in search.store.units]
    sparsity_plot({name: (blocks, [float(search.space.units[i].levels[g]) for i, g in enumerate(p["genome"])],
                          search.numels) for name, p in run.plans.items()},
                  run.run_dir / "profile.png", f"Per-block sparsity (target {100 * run.config.sparsity.target:.0f}%)")
    if run.history:
        convergence_plot(run.history, run.run_dir / "convergence.png", "KL to dense (nats)")
    (run.run_dir / "result.json").write_text(json.dumps({
        "evopress_version": __version__, "config": to_dict(run.config), "protocol": search.session.protocol,
        "database": {"path": str(search.store.path), "bytes": search.store.nbytes(),
                     "config": search.store.manifest["config"]},
        "dense_ppl": run.dense_ppl, "methods": run.plans,
        "units": [u.name for u in search.space.units], "history": run.history, "export": run.export},
        indent=1, default=str))
