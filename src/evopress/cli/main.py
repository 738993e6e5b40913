"""`evopress ...`: parse flags into the same config dataclasses recipes use, then call the API."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from evopress.config import (BaselineConfig, DataConfig, DropConfig, RunConfig, SearchConfig, SparsityConfig,
                             load_recipe)
from evopress.cli import theory
from evopress.errors import EvopressError

DEMO = RunConfig(
    run_dir="runs/demo",
    data=DataConfig(seq_len=256, calibration_tokens=32_768, heldout_tokens=131_072),
    search=SearchConfig(offspring=16, stages=((2, 1024), (1, 8192)), initial=32, initial_tokens=1024),
    baselines=BaselineConfig(random_samples=64),
)


def _stages(text: str) -> tuple[tuple[int, int], ...]:
    try:
        return tuple((int(k), int(t)) for k, t in (part.split(":") for part in text.split(",")))
    except ValueError:
        raise argparse.ArgumentTypeError(f"stages look like 2:2048,1:32768 (survivors:tokens), got {text!r}") from None


def _target(text: str) -> float:
    value = float(text)
    return int(value) if value >= 1 and value.is_integer() else value


def add_common_flags(p: argparse.ArgumentParser, run_dir: str, export: tuple[str, ...]) -> None:
    """Flags every search command shares: model, run directory, data and search settings."""
    d, s = DataConfig(), SearchConfig()
    p.add_argument("--model", default="zoo:tiny", help="HF model directory or name; zoo:tiny = built-in model")
    p.add_argument("--run-dir", default=run_dir, help="journal, plots, report and model go here; resumes")
    p.add_argument("--export", dest="export_format", choices=export + ("none",), default="hf")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto")
    g = p.add_argument_group("data")
    g.add_argument("--calibration", default=d.calibration, help="builtin | text file/dir | wikitext2 | c4 | fineweb-edu")
    g.add_argument("--heldout", default=d.heldout, help="evaluation source (default: held-out split of --calibration)")
    g.add_argument("--seq-len", type=int, default=d.seq_len)
    g.add_argument("--calibration-tokens", type=int, default=d.calibration_tokens)
    g.add_argument("--heldout-tokens", type=int, default=d.heldout_tokens)
    g = p.add_argument_group("search")
    g.add_argument("--generations", type=int, default=s.generations,
                   help="0 = default (depth: k(n-k)/1.5, the reference's rule; sparsity: 200)")
    g.add_argument("--offspring", type=int, default=s.offspring)
    g.add_argument("--stages", type=_stages, default=s.stages, help="survivors:tokens,... e.g. 2:2048,1:32768")
    g.add_argument("--initial", type=int, default=s.initial, help="random candidates for the first parent (depth)")
    g.add_argument("--initial-tokens", type=int, default=s.initial_tokens)
    g.add_argument("--fitness", choices=("kl", "ppl"), default=s.fitness)
    g.add_argument("--topk", type=int, default=s.topk, help="0 = full-vocabulary KL; K = top-K plus tail mass")
    g.add_argument("--seed", type=int, default=s.seed)
    g.add_argument("--evaluator", choices=("batched", "simple"), default=s.evaluator,
                   help="batched: depth candidates run together from their first change (same values, faster)")
    g.add_argument("--compile", action="store_true",
                   help="batched evaluators: fuse the KL and the work between matmuls with torch.compile (GPU; warm-up first)")
    g.add_argument("--stack-tokens", type=int, default=s.stack_tokens,
                   help="batched evaluators: candidate tokens run together in one stack (more: fewer kernel "
                        "launches, more GPU memory)")


def add_run_flags(p: argparse.ArgumentParser) -> None:
    add_common_flags(p, "runs/drop", ("hf", "nemotron-nas"))
    p.add_argument("--target", type=_target, default=0.25, help="fraction (<1) or count of sublayers per kind")
    p.add_argument("--granularity", choices=("sublayer", "block"), default="sublayer")
    p.add_argument("--baselines", default="shortgpt,random", help="comma list of shortgpt,random,exhaustive or none")
    p.add_argument("--random-samples", type=int, default=64)


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(",")) if text else ()
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers like 0.4,0.9,0.025, got {text!r}") from None


def add_sparsify_flags(p: argparse.ArgumentParser) -> None:
    sp = SparsityConfig()
    add_common_flags(p, "runs/sparsify", ("hf",))
    p.add_argument("--target", type=float, default=sp.target, help="average sparsity over all linear weights")
    p.add_argument("--steps", default="db,search,eval,export", help="comma list of db,search,eval,export (each alone resumes)")
    g = p.add_argument_group("database")
    g.add_argument("--db", default="", help="variant store directory (default: RUN_DIR/database); shareable")
    g.add_argument("--builder", choices=("sparsegpt", "wanda", "magnitude"), default=sp.builder)
    g.add_argument("--grid", type=_floats, default=sp.grid, help="low,high,step of the sparsity levels "
                   "(default: target +- 0.2 in steps of 0.025)")
    g.add_argument("--small-step", type=float, default=sp.small_step, help="finer step for small matrices")
    g.add_argument("--database-tokens", type=int, default=0, help="calibration tokens for the database "
                   "(0 = --calibration-tokens)")
    g.add_argument("--baselines", default=",".join(sp.baselines), help="comma list of uniform,owl,dp,random or none")


def _data_search(a: argparse.Namespace) -> dict:
    return {"model": a.model, "device": a.device, "dtype": a.dtype, "run_dir": a.run_dir,
            "export_format": a.export_format,
            "data": DataConfig(a.calibration, a.heldout, a.seq_len, a.calibration_tokens, a.heldout_tokens, a.seed),
            "search": SearchConfig(a.generations, a.offspring, a.stages, a.initial, a.initial_tokens, 3, a.fitness,
                                   a.topk, a.seed, a.evaluator, a.compile, a.stack_tokens)}


def _names(text: str) -> tuple[str, ...]:
    return () if text in ("", "none") else tuple(text.split(","))


def config_from_args(a: argparse.Namespace) -> RunConfig:
    return RunConfig(method="drop", drop=DropConfig(a.target, a.granularity),
                     baselines=BaselineConfig(_names(a.baselines), a.random_samples), **_data_search(a))


def sparsify_config_from_args(a: argparse.Namespace) -> RunConfig:
    sp = SparsityConfig(a.target, a.db, a.builder, a.grid, a.small_step, a.database_tokens,
                        baselines=_names(a.baselines))
    return RunConfig(method="sparsify", sparsity=sp, **_data_search(a))


def cmd_drop(a):
    from evopress.api import drop
    drop(config_from_args(a))


def cmd_sparsify(a):
    from evopress.api import sparsify
    sparsify(sparsify_config_from_args(a), steps=_names(a.steps))


def cmd_run(a):
    from evopress.api import drop, sparsify
    cfg = load_recipe(a.recipe)
    cfg = dataclasses.replace(cfg, run_dir=a.run_dir) if a.run_dir else cfg
    (sparsify if cfg.method == "sparsify" else drop)(cfg)


def cmd_demo(a):
    from evopress.api import drop
    print("evopress demo: EvoPress depth pruning of the built-in tiny model (25% of sublayers), offline on CPU")
    run = drop(dataclasses.replace(DEMO, run_dir=a.run_dir, device=a.device))
    print(f"\ndense held-out perplexity {run.dense_ppl:.3f} -> pruned {run.best.ppl:.3f}; "
          f"run directory {run.run_dir} (plots, journal, report, exported model)")


def cmd_eval(a):
    from evopress.evaluate import evaluate_model
    evaluate_model(a.model, a.plan, a.data, a.seq_len, a.tokens, a.device, a.dtype, a.tasks)


def cmd_export(a):
    from evopress.evaluate import export_run
    export_run(Path(a.run_dir), a.format, Path(a.out) if a.out else None)


def cmd_zoo_train(a):
    from evopress.zoo import train
    path = train(a.preset, a.out, device=None if a.device == "auto" else a.device, seed=a.seed)
    print(f"trained {a.preset} model written to {path}")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="evopress", description="Non-uniform LLM compression by evolutionary search.")
    sub = p.add_subparsers(dest="command", required=True)
    q = sub.add_parser("demo", help="prune the built-in tiny model end to end (a few minutes on a CPU)")
    q.add_argument("--run-dir", default="runs/demo")
    q.add_argument("--device", default="auto")
    q.set_defaults(func=cmd_demo)
    q = sub.add_parser("drop", help="EvoPress depth pruning: search, baselines, evaluation, export")
    add_run_flags(q)
    q.set_defaults(func=cmd_drop)
    q = sub.add_parser("sparsify", help="EvoPress unstructured sparsity: database, search, baselines, "
                       "evaluation, export")
    add_sparsify_flags(q)
    q.set_defaults(func=cmd_sparsify)
    q = sub.add_parser("run", help="run a YAML recipe (method: drop | sparsify; the same keys as the flags)")
    q.add_argument("recipe")
    q.add_argument("--run-dir", default="")
    q.set_defaults(func=cmd_run)
    q = sub.add_parser("eval", help="held-out perplexity of a model, optionally with a run's plan applied")
    q.add_argument("--model", default="zoo:tiny")
    q.add_argument("--plan", default="", help="plan.json from a run directory")
    q.add_argument("--data", default="builtin")
    q.add_argument("--seq-len", type=int, default=256)
    q.add_argument("--tokens", type=int, default=65_536)
    q.add_argument("--device", default="auto")
    q.add_argument("--dtype", default="auto")
    q.add_argument("--tasks", default="", help="comma list of lm-eval tasks (needs evopress[eval])")
    q.set_defaults(func=cmd_eval)
    q = sub.add_parser("export", help="write a run's best model in another format")
    q.add_argument("--run-dir", required=True)
    q.add_argument("--format", choices=("hf", "nemotron-nas"), default="hf")
    q.add_argument("--out", default="", help="default: RUN_DIR/model-FORMAT")
    q.set_defaults(func=cmd_export)
    zoo = sub.add_parser("zoo", help="train the small test-subject models").add_subparsers(dest="zoo", required=True)
    q = zoo.add_parser("train", help="train a preset from the built-in corpus")
    q.add_argument("--preset", default="tiny", choices=("tiny", "bench"))
    q.add_argument("--out", default="", help="output directory (default: zoo/<preset>)")
    q.add_argument("--device", default="auto")
    q.add_argument("--seed", type=int, default=0)
    q.set_defaults(func=cmd_zoo_train)
    theory.add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        args.func(args)
    except EvopressError as e:
        print(f"evopress: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nevopress: interrupted; rerun the same command to resume from the journal", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
