"""`evopress theory ...`: the EA-theory experiments (docs/theory.md), one sub-command each.

    evopress theory sdbv | drift | threshold | selfadjust | disom | budget | all
        [--sizes 50,100,200] [--runs 100] [--seed 0] [--out runs/theory] [--quick] [--cutoff N (disom)]

Each prints its table and the claims it checked, and writes OUT/<name>.png and OUT/<name>.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from evopress.errors import EvopressError


def _sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"sizes look like 50,100,200 (comma-separated n), got {text!r}") from None
    if not sizes or min(sizes) < 2:
        raise argparse.ArgumentTypeError(f"every size n must be at least 2, got {text!r}")
    return sizes


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _flags(p: argparse.ArgumentParser, with_sizes: bool, cutoff: bool = False) -> None:
    if with_sizes:
        p.add_argument("--sizes", type=_sizes, default=None, help="comma list of n (default: the experiment's)")
        p.add_argument("--runs", type=_positive, default=None, help="runs per cell (default: the experiment's)")
    if cutoff:
        p.add_argument("--cutoff", type=_positive, default=None, help="evaluations after which a run is censored")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/theory", help="directory for <experiment>.png and <experiment>.json")
    p.add_argument("--quick", action="store_true", help="the reduced sizes the tests use (seconds, not minutes)")


def add_parser(sub) -> None:
    """Add `theory` with one sub-command per experiment (a)–(f) and `all` to evopress's sub-parsers."""
    from evopress.theory.experiments import EXPERIMENTS

    p = sub.add_parser("theory", help="reproduce the EA theory results: SDBV, plus vs comma, EvoPress convergence",
                       description="Experiments on pseudo-Boolean benchmark functions (docs/theory.md).")
    experiments = p.add_subparsers(dest="experiment", required=True)
    for name, module in EXPERIMENTS.items():
        q = experiments.add_parser(name, help=module.HELP, description=module.__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
        _flags(q, with_sizes=True, cutoff=name == "disom")
        q.set_defaults(func=cmd_theory, experiments=(name,))
    q = experiments.add_parser("all", help="every experiment at its default size, one after the other")
    _flags(q, with_sizes=False)
    q.set_defaults(func=cmd_theory, experiments=tuple(EXPERIMENTS))


def cmd_theory(a) -> None:
    from evopress.theory.experiments import EXPERIMENTS

    failed = []
    for name in a.experiments:
        module = EXPERIMENTS[name]
        kwargs = dict(module.QUICK) if a.quick else {}
        for flag in ("sizes", "runs", "cutoff"):
            if getattr(a, flag, None) is not None:
                kwargs[flag] = getattr(a, flag)
        kwargs["seed"] = a.seed
        print(f"evopress theory {name}: {module.HELP}", flush=True)
        try:
            report = module.run(**kwargs)
        except ValueError as e:
            raise EvopressError(f"theory {name}: {e}") from e
        print(report.table())
        paths = report.save(Path(a.out), module.plot)
        print("wrote " + ", ".join(str(p) for p in paths) + "\n", flush=True)
        failed += [f"{name}: {claim}" for claim, held in report.checks.items() if not held]
    if failed:
        raise EvopressError("claims that did not hold:\n  " + "\n  ".join(failed))


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry (`python -m evopress.cli.theory sdbv`), the same as `evopress theory sdbv`."""
    p = argparse.ArgumentParser(prog="evopress")
    add_parser(p.add_subparsers(dest="command", required=True))
    args = p.parse_args(["theory", *(sys.argv[1:] if argv is None else argv)])
    try:
        args.func(args)
    except EvopressError as e:
        print(f"evopress: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
