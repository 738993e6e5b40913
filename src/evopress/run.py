"""The one run skeleton: database → search → baselines → held-out evaluation → export → report.

Every compression method runs through here (`evopress.methods`); this file knows none by name.
Each step can run alone (`steps`), and a rerun skips the steps already done with the same
config, so a killed run resumes and a finished one is not redone:

    db      the method's database (if it has one), built or finished block by block
    search  EvoPress and the baselines, on the same data; every plan is also scored on the
            same final-stage tokens ("calibration KL"), so the numbers compare across methods
    eval    held-out perplexity of the dense model and of every plan (protocol recorded)
    export  the EvoPress plan written to RUN_DIR/model, replaced atomically

Under torchrun, process 0 builds the database and owns the run directory; every process runs
the same search with the candidates shared out (`evopress.distributed`).
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from evopress import __version__
from evopress.config import RunConfig, plain, to_dict
from evopress.errors import DataError, RecipeError
from evopress.methods import get_method
from evopress.methods.baselines import SHARED
from evopress.rundir import SCHEMA, RunDir
from evopress.search import Fidelity, Journal, Settings, Stage, evolve
from evopress.search.loop import draw_key, header

STEPS = ("db", "search", "eval", "export")
SCORE_DRAW = draw_key("random", 0, 0)  # the tokens every plan is scored on (the last stage's size)


@dataclass
class RunResult:
    """What a run leaves, in Python: `plans[name]` as plans.json holds it (EvoPress first)."""

    config: RunConfig
    run_dir: Path
    plans: dict = field(default_factory=dict)
    dense_ppl: float | None = None
    history: list = field(default_factory=list)
    protocol: dict = field(default_factory=dict)
    export: dict | None = None
    summary: str = ""

    @property
    def best(self) -> dict:
        return self.plans["EvoPress"]


class Run:
    """One run's state, built step by step: method, session, space, budget, bank, objective, journal."""

    def __init__(self, cfg: RunConfig, log: Callable[[str], None] = print):
        self.cfg, self.log = cfg, log
        self.method = get_method(cfg.method)(cfg)
        self.dir = RunDir(cfg.run_dir)
        self.session = self.space = self.budget = self.bank = self._objective = self._journal = None
        self._post_steps = None

    def open(self) -> "Run":
        from evopress.session import open_session

        self.session = open_session(self.cfg, self.log)
        self.method.check_model(self.session)
        return self

    def check_tokens(self) -> None:
        """Every stage's tokens exist in the calibration set (each row predicts all but its first),
        said now rather than after the database and the teacher."""
        rows, seq = self.session.calibration.shape
        s = self.cfg.search
        train = max(s.training_tokens, self.cfg.train.post_train_tokens)
        pool = self.session.pool
        if train and (pool is None or train > pool.numel()):
            have = 0 if pool is None else pool.numel()
            raise DataError(f"training takes up to {train:,} tokens (--stages, --post-train-tokens), but the training "
                            f"pool holds {have:,}; set --training-tokens to at least {train:,}")
        need = max([st[1] for st in s.stages] + [s.initial_tokens if s.initial and self.method.start_from == "random" else 0])
        if need > rows * (seq - 1):
            raise DataError(f"the search scores up to {need:,} tokens (--stages / --initial-tokens), but the "
                            f"calibration set predicts {rows * (seq - 1):,} ({rows} rows x {seq - 1}); raise "
                            f"--calibration-tokens to {-(-need // (seq - 1)) * seq:,} or lower the stage tokens")

    def prepare(self) -> "Run":
        """Space, budget and bank (the database must be complete)."""
        self.space = self.method.space(self.session)
        self.budget = self.method.budget(self.space)
        self.budget.validate(self.space)
        self.bank = self.method.bank(self)
        return self

    @property
    def final_tokens(self) -> int:
        return self.cfg.search.stages[-1][1]

    @property
    def objective(self):
        """The search's fitness (teacher targets computed on first use, on the dense model)."""
        if self._objective is None:
            self.bank.apply(None)
            self._objective = self.session.search_objective(self.cfg, self.bank)
        return self._objective

    @property
    def settings(self) -> Settings:
        s = self.cfg.search
        return Settings(generations=s.generations or self.method.generations(self.space, self.budget),
                        offspring=s.offspring, stages=tuple(Stage(*st) for st in s.stages),
                        initial=s.initial if self.method.start_from == "random" else 0,
                        initial_tokens=s.initial_tokens, max_switches=s.max_switches, seed=s.seed)

    @property
    def journal(self) -> Journal:
        if self._journal is None:
            self._journal = self.new_journal("journal.jsonl", self.settings)
        return self._journal

    def new_journal(self, name: str, settings: Settings) -> Journal:
        """A journal in the run directory for a search with `settings` on this run's space and data."""
        s = self.cfg.search
        extra = {"method": self.method.name, "options": to_dict(self.cfg)[self.method.section],
                 "model": self.session.fingerprint, "data": self.session.protocol, "fitness": s.fitness,
                 "topk": s.topk, "database": (self.method.database(self) or {}).get("config")}
        if any(st.train_tokens for st in settings.stages):  # what the trained fitness depends on
            extra["train"] = {k: v for k, v in to_dict(self.cfg)["train"].items() if k != "post_train_tokens"}
        return Journal(self.dir.path / name, header(self.space, self.budget, settings, extra))

    def score(self, genome) -> float:
        """Calibration fitness of `genome` on the tokens every plan is scored on (journaled)."""
        fidelity = Fidelity(self.final_tokens, SCORE_DRAW)
        return self.journal.evaluate(self.objective, [tuple(genome)], fidelity, phase="baseline")[0]

    def heldout_ppl(self, genome, name: str = "dense") -> float:
        from evopress.eval.metrics import perplexity

        self.bank.apply(None if genome is None else tuple(genome))
        s = self.session
        return perplexity(s.model, s.heldout, batch_size=s.batch_size, progress=f"held-out ppl: {name}")

    def post_trained_ppl(self, genome, name: str) -> float:
        """Held-out perplexity of `genome` after `--post-train-tokens` of training on the pool (the same
        rows in the same order for every plan); the trained weights are dropped afterwards."""
        from evopress.eval.metrics import perplexity
        from evopress.train import batches, loss_for, sequences, train

        t, s = self.cfg.train, self.session
        if self._post_steps is None:  # the same for every plan: made once
            rows = sequences(s.pool, t.post_train_tokens, SCORE_DRAW, self.cfg.data.seed)
            self._post_steps = rows.numel(), batches(s.model, rows, t, lambda: self.bank.apply(None))
        tokens, steps = self._post_steps
        self.bank.apply(tuple(genome))
        t0 = time.perf_counter()
        with train(s.model, steps, t, loss_for(t)):
            self.log(f"post-trained {name} on {tokens:,} tokens in {time.perf_counter() - t0:.1f}s")
            return perplexity(s.model, s.heldout, batch_size=s.batch_size, progress=f"held-out ppl: {name}, trained")

    def record(self, genome, **fields) -> dict:
        """A plan as plans.json holds it: genome, readable levels, the method's measures."""
        genome = tuple(int(g) for g in genome)
        return {"genome": list(genome), "levels": self.method.levels(self.space, genome),
                "cost": self.space.cost(genome), "cost_unit": self.method.cost_unit,
                **self.method.measures(self.space, genome), **fields}


def check(cfg: RunConfig, steps) -> tuple[str, ...]:
    """Every setting that can be checked without a model, checked before anything loads."""
    from evopress.models.loading import resolve_device

    method = get_method(cfg.method)(cfg)
    steps = tuple(STEPS if steps is None else steps)
    bad = [s for s in steps if s not in STEPS]
    if bad or not steps:
        raise RecipeError(f"unknown step {bad[0] if bad else ''!r}; choose from {', '.join(STEPS)}")
    known = {**SHARED, **method.baselines}
    bad = [b for b in baseline_names(cfg) if b not in known]
    if bad:
        raise RecipeError(f"unknown baseline {bad[0]!r} for method {cfg.method!r}; choose from {', '.join(known)}")
    if cfg.export_format not in method.exporters + ("none",):
        raise RecipeError(f"method {cfg.method!r} exports to {', '.join(method.exporters)} (or none), "
                          f"not {cfg.export_format!r}")
    if cfg.budget and not method.byte_budget:
        raise RecipeError(f"method {cfg.method!r} takes no byte budget (--budget): its export saves no bytes; "
                          "give its --target instead")
    if (cfg.search.training_tokens or cfg.train.post_train_tokens) and not cfg.data.training_tokens:
        raise RecipeError("training stages and --post-train-tokens need a training pool: set --training-tokens "
                          "(for example 200000), the windows after the calibration ones")
    method.check()
    resolve_device(cfg.device)
    return steps


def resolved(cfg: RunConfig) -> RunConfig:
    """Paths made absolute, so the run resumes, evaluates and exports from any working directory."""
    from evopress.config import replace
    from evopress.session import model_name

    cfg = replace(cfg, model=model_name(cfg.model), run_dir=str(Path(cfg.run_dir).expanduser().resolve()))
    return get_method(cfg.method)(cfg).resolved()


def baseline_names(cfg: RunConfig) -> tuple[str, ...]:
    names = cfg.baselines.names
    return get_method(cfg.method).default_baselines if names is None else names


def run(cfg: RunConfig, log: Callable[[str], None] = print, steps=None) -> RunResult:
    """The run `cfg` describes, end to end (or its `steps`), all in `cfg.run_dir`.

    `steps=None` runs every step not yet done with this config; listed steps always run."""
    from evopress.distributed import barrier, for_rank, world

    forced = steps is not None
    steps = check(cfg, steps)
    cfg, log = for_rank(resolved(cfg), log)
    rank = world()[0]
    if rank > 0:  # the other processes only help the search
        steps = tuple(s for s in steps if s == "search")
    r = Run(cfg, log)
    with r.dir.lock():
        state = r.dir.plans()
        recipe = to_dict(cfg)
        if state["config"] != recipe:
            state.update(config=recipe, done=[])
        if not forced:
            skipped = [s for s in steps if s in state["done"]]
            steps = tuple(s for s in steps if s not in state["done"])
            if skipped:
                log(f"steps {', '.join(skipped)} already done with this config in {r.dir.path} "
                    "(pass --steps to redo one)")
        r.dir.write_config(recipe)
        r.open()
        if "search" in steps:
            r.check_tokens()
        if rank == 0 and "db" in steps:
            r.method.build(r)
        barrier()
        result = RunResult(cfg, r.dir.path, protocol=r.session.protocol)
        if not set(steps) - {"db"} and not state["plans"]:
            _done(r, state, steps)
            return result
        r.prepare()
        if "search" in steps:
            state["plans"] = search(r)
            _done(r, state, ("search",))
        if rank > 0:
            return result
        if not state["plans"]:
            raise RecipeError(f"no search results in {r.dir.path}; run the 'search' step first")
        if "eval" in steps:
            r.log("evaluating held-out perplexity ...")
            state["dense"] = {"ppl": r.heldout_ppl(None)}
            for name, plan in state["plans"].items():
                plan["ppl"] = r.heldout_ppl(plan["genome"], name)
                if cfg.train.post_train_tokens:
                    plan["ppl trained"] = r.post_trained_ppl(plan["genome"], name)
            _done(r, state, ("eval",))
        if "export" in steps and cfg.export_format != "none":
            state["export"] = export(r, state["plans"]["EvoPress"]["genome"], r.dir.model, cfg.export_format)
        _done(r, state, steps)
        return report(r, state, result)


def _done(r: Run, state: dict, steps) -> None:
    state["done"] = sorted(set(state["done"]) | set(steps), key=STEPS.index)
    r.dir.save_plans(state)


def search(r: Run) -> dict:
    """EvoPress, then each baseline, on the same data; every plan scored on the same tokens."""
    method, settings = r.method, r.settings
    objective, journal = r.objective, r.journal  # teacher targets while the model is dense
    start = method.uniform(r) if method.start_from == "uniform" else None
    r.log(f"EvoPress: {method.describe_target()}; {settings.generations} generations x {settings.offspring} "
          f"offspring, stages {r.cfg.search.stages}")
    result = evolve(r.space, r.budget, objective, settings, journal, _generation_line(r, settings.generations),
                    start=start)
    seconds = sum(h["seconds"] for h in result.history)  # journaled: a resumed run counts every part
    plans = {"EvoPress": r.record(result.best, fitness=result.fitness, seconds=seconds,
                                  history=result.history, kl=r.score(result.best))}
    known = {**SHARED, **method.baselines}
    for name in baseline_names(r.cfg):
        t0 = time.perf_counter()
        outs = known[name](method, r)
        for out in [outs] if isinstance(outs, dict) else outs or ():  # a baseline may give several plans
            title, genome = out.pop("name"), out.pop("genome")
            plans[title] = r.record(genome, fitness=out.pop("fitness", None), seconds=time.perf_counter() - t0,
                                    kl=r.score(genome), **out)
            r.log(f"baseline {title}: calibration {r.cfg.search.fitness} {plans[title]['kl']:.5f}")
    return plans


def _generation_line(r: Run, total: int) -> Callable[[dict], None]:
    name = "KL" if r.cfg.search.fitness == "kl" else "ppl"

    def show(h: dict) -> None:
        speed = f"{h['tokens_per_s'] / 1e3:8.1f}k tok/s" if h.get("tokens_per_s") else "  (from journal)"
        label = "init" if h["phase"] == "init" else f"gen {h['gen']:>3}/{total}"
        r.log(f"{label:>12}  best {name} {h['fitness']:.5f}  {r.method.progress(r.space, h['cost'])}  {speed}")
    return show


def export(r: Run, genome, out: Path, fmt: str) -> dict:
    """Write `genome`'s model to `out`, replacing an earlier export atomically."""
    from evopress.export.directory import staged

    with staged(out, overwrite=True) as scratch:
        info = r.method.export(r, tuple(genome), scratch, fmt)
    r.bank.apply(None)
    info = {"path": str(Path(out).resolve()), "format": fmt, **plain(info)}
    r.log(f"exported {fmt} model to {out}")
    return info


def report(r: Run, state: dict, result: RunResult) -> RunResult:
    """summary.txt, result.json, the plots and report.md, from plans.json: the same for every method."""
    from evopress.report import convergence_plot, markdown_report, table

    plans = state["plans"]
    result.plans = {k: {kk: vv for kk, vv in v.items() if kk != "history"} for k, v in plans.items()}
    result.history = plans["EvoPress"].get("history", [])
    result.dense_ppl = state.get("dense", {}).get("ppl")
    result.export = state.get("export")
    fitness = "calibration KL" if r.cfg.search.fitness == "kl" else "calibration ppl"
    extra = list(r.method.measures(r.space, tuple(plans["EvoPress"]["genome"])))
    rows = [{"method": "dense", "ppl": result.dense_ppl if result.dense_ppl is not None else "-"}]
    rows += [{"method": name, "ppl": p.get("ppl", "-"), "search": p["fitness"] if p["fitness"] is not None else "-",
              "kl": p["kl"], "seconds": p["seconds"], "trained": p.get("ppl trained", "-"),
              **{k: p[k] for k in extra}} for name, p in plans.items()]
    trained = [("trained", f"held-out ppl after {r.cfg.train.post_train_tokens:,} training tokens")] \
        if any("ppl trained" in p for p in plans.values()) else []
    columns = [("method", "method"), ("ppl", "held-out ppl")] + trained + [
        ("search", "search fitness"), ("kl", fitness), ("seconds", "seconds")] + [(k, k) for k in extra]
    result.summary = table(rows, columns)
    r.dir.write("summary.txt", result.summary + "\n")
    plots = ["profile.png"] + list(r.method.profile_plot(r, plans, r.dir.path / "profile.png") or [])
    if result.history:
        ylabel = "KL to dense (nats)" if r.cfg.search.fitness == "kl" else "perplexity"
        convergence_plot(result.history, r.dir.path / "convergence.png", ylabel)
        plots.append("convergence.png")
    record = plain({
        "version": SCHEMA, "evopress_version": __version__, "python": platform.python_version(),
        "versions": versions(r.session.device),
        "method": r.method.name, "config": to_dict(r.cfg), "protocol": r.session.protocol,
        "database": r.method.database(r), "dense_ppl": result.dense_ppl, "plans": result.plans,
        "units": [u.name for u in r.space.units], "history": result.history, "export": result.export,
        "seconds": {"search": result.plans["EvoPress"]["seconds"]}})
    r.dir.write("result.json", json.dumps(record, indent=1))
    model = Path(r.cfg.model).name or r.cfg.model
    r.dir.write("report.md", markdown_report(
        f"evopress {r.method.name}: {model}", [rows, columns], plots, plans, list(plans["EvoPress"]["levels"]),
        {"Target": r.method.describe_target(), "Export": record["export"] or "none (not exported)",
         "Settings (config.yaml)": record["config"], "Data and evaluation protocol": record["protocol"],
         "Database": record["database"] or "none", "Versions": record["versions"]}))
    r.log(result.summary)
    return result


def versions(device) -> dict:
    """What produced the numbers: evopress, python, torch, transformers, the device."""
    import torch
    import transformers

    name = torch.cuda.get_device_name(device) if getattr(device, "type", "") == "cuda" else platform.processor()
    return {"evopress": __version__, "python": platform.python_version(), "torch": str(torch.__version__),
            "transformers": str(transformers.__version__), "platform": platform.platform(), "device": str(device),
            "device_name": name or platform.machine()}
