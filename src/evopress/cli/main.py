"""`evopress ...`: one subcommand per registered method (flags generated from its config), plus
run (a recipe), demo, eval, export, train (post-training), zoo and theory."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from evopress.cli import theory
from evopress.cli import train as train_cli
from evopress.cli.flags import add_config_flags, config_from_args
from evopress.config import BaselineConfig, DataConfig, RunConfig, SearchConfig, load_recipe, replace
from evopress.errors import EvopressError
from evopress.methods import METHODS

DEMO = RunConfig(
    run_dir="runs/demo",
    data=DataConfig(seq_len=256, calibration_tokens=32_768, heldout_tokens=131_072),
    search=SearchConfig(offspring=16, stages=((2, 1024), (1, 8192)), initial=32, initial_tokens=1024),
    baselines=BaselineConfig(random_samples=64),
)
STEPS_HELP = "comma list of db,search,eval,export (default: every step not yet done; listed steps always run)"


def _steps(text: str):
    return tuple(s for s in text.split(",") if s) if text else None


def cmd_method(a):
    from evopress.api import run
    run(config_from_args(a, RunConfig(method=a.command)), steps=_steps(a.steps))


def cmd_run(a):
    from evopress.api import run
    cfg = load_recipe(a.recipe)
    run(replace(cfg, run_dir=a.run_dir) if a.run_dir else cfg, steps=_steps(a.steps))


def cmd_demo(a):
    from evopress.api import run
    print("evopress demo: EvoPress depth pruning of the built-in tiny model (25% of sublayers), offline on CPU")
    result = run(replace(DEMO, run_dir=a.run_dir, device=a.device))
    print(f"\ndense held-out perplexity {result.dense_ppl:.3f} -> pruned {result.best['ppl']:.3f}; "
          f"run directory {result.run_dir} (plots, journal, report, exported model)")


def cmd_eval(a):
    from evopress.evaluate import evaluate_model
    evaluate_model(a.model, a.plan, a.data, a.seq_len, a.tokens, a.device, a.dtype, a.tasks, a.name,
                   out_path=a.out, limit=a.limit)


def cmd_export(a):
    from evopress.evaluate import export_run
    export_run(Path(a.run_dir), a.format, Path(a.out) if a.out else None, a.name)


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
    for name, method in METHODS.items():
        q = sub.add_parser(name, help=method.help or f"the {name} method")
        add_config_flags(q, RunConfig(method=name), method)
        q.add_argument("--steps", default="", help=STEPS_HELP)
        q.set_defaults(func=cmd_method)
    q = sub.add_parser("run", help=f"run a YAML recipe (method: {' | '.join(METHODS)}; the same keys as the flags)")
    q.add_argument("recipe")
    q.add_argument("--run-dir", default="")
    q.add_argument("--steps", default="", help=STEPS_HELP)
    q.set_defaults(func=cmd_run)
    q = sub.add_parser("eval", help="held-out perplexity of a model, optionally with a run's plan applied")
    q.add_argument("--model", default="zoo:tiny")
    q.add_argument("--plan", default="", help="a run directory (or its plans.json): apply its plan to --model")
    q.add_argument("--name", default="EvoPress", help="which of the run's plans (EvoPress, a baseline's name)")
    q.add_argument("--data", default="builtin")
    q.add_argument("--seq-len", type=int, default=256)
    q.add_argument("--tokens", type=int, default=65_536)
    q.add_argument("--device", default="auto")
    q.add_argument("--dtype", default="auto")
    q.add_argument("--tasks", default="", help="downstream tasks through lm-eval (needs evopress[eval]): zoo (shipped, "
                   "offline), zeroshot5 (arc, hellaswag, piqa, winogrande; HF hub data), lm-eval task names, "
                   "or a folder of task YAMLs; comma-separated")
    q.add_argument("--limit", type=int, default=None, help="at most this many items per task (quick checks only)")
    q.add_argument("--out", default="", help="write the results (ppl, tasks, versions, hashes) to this JSON file")
    q.set_defaults(func=cmd_eval)
    q = sub.add_parser("export", help="write a run's best model in another format")
    q.add_argument("--run-dir", required=True)
    q.add_argument("--format", choices=sorted({f for m in METHODS.values() for f in m.exporters}), default="hf")
    q.add_argument("--out", default="", help="default: RUN_DIR/model-FORMAT (an earlier export there is replaced)")
    q.add_argument("--name", default="EvoPress", help="which of the run's plans to export")
    q.set_defaults(func=cmd_export)
    train_cli.add_parser(sub)
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
