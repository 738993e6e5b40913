"""`evopress train MODEL --out OUT ...`: post-training, one flag per field of `PostConfig` and its
`TrainConfig` section (generated, so defaults and help are written once, in the config)."""

from __future__ import annotations

import argparse
import dataclasses

from evopress.cli.flags import _dest, _fields, _get, _help, _kind
from evopress.config import _parse, plain

HELP = "post-train (heal) a compressed model: distillation from the dense model, or LM loss"
SKIP = {("model",), ("train", "post_train_tokens")}  # the positional argument; a run's own setting


def add_parser(sub) -> None:
    from evopress.train.post import PostConfig

    p = sub.add_parser("train", help=HELP, description=HELP + "; rerun the same command to resume it.")
    p.add_argument("model", help="the model to train: an HF directory (any evopress export) or a hub name")
    defaults, flags = plain(dataclasses.asdict(PostConfig())), {}
    groups = {"run": p.add_argument_group("run"), "train": p.add_argument_group("train")}
    for path, f, hint in _fields(PostConfig):
        if path in SKIP:
            continue
        flag = (f.default.json_schema_extra or {}).get("flag") or "--" + path[-1].replace("_", "-")
        extra = {"required": True} if path == ("out",) else {}
        groups["train" if len(path) > 1 else "run"].add_argument(
            flag, dest=_dest(flag), default=argparse.SUPPRESS, **_kind(hint), **extra,
            help=_help(f.default.description or "", _get(defaults, path)))
        flags[_dest(flag)] = path
    p.set_defaults(func=run, _train_flags=flags)


def config(args: argparse.Namespace):
    """The PostConfig the command line gives: the defaults with every flag given, validated."""
    from evopress.train.post import PostConfig

    values = plain(dataclasses.asdict(PostConfig(model=args.model)))
    for dest, path in args._train_flags.items():
        if dest in vars(args):
            _get(values, path[:-1])[path[-1]] = vars(args)[dest]
    return _parse(PostConfig, values, "flags")


def run(args: argparse.Namespace) -> None:
    from evopress.train.post import post_train

    post_train(config(args))
