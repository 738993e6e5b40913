"""CLI flags generated from the config fields: one flag per recipe key, help and default from the field.

A flag is `--<field-name>` (or the field's `flag`), in a group per section; two fields with one
name (data.seed and search.seed) share one flag that sets both. A parsed value overrides the
base config's recipe and the whole recipe is validated again, so flags and recipes take the
same values and give the same errors.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections import defaultdict
from typing import Literal

from evopress.config import RunConfig, from_dict, to_dict

SKIP = {"method", "options"}


def _stages(text: str) -> list[list[int]]:
    try:
        stages = [[int(x) for x in part.split(":")] for part in text.split(",")]
        if all(len(st) in (2, 3) for st in stages):
            return stages
    except ValueError:
        pass
    raise argparse.ArgumentTypeError(f"stages look like 2:2048,1:32768 (survivors:tokens[:training tokens]), "
                                     f"got {text!r}")


def _floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",")] if text else []
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers like 0.4,0.9,0.025, got {text!r}") from None


def _names(text: str) -> list[str]:
    return [] if text in ("", "none") else text.split(",")


def _number(text: str):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    return int(value) if value.is_integer() and "." not in text else value


def _kind(hint) -> dict:
    """argparse keywords for a field's type."""
    args = typing.get_args(hint)
    origin = typing.get_origin(hint)
    if hint is bool:
        return {"action": argparse.BooleanOptionalAction}
    if origin is Literal:
        return {"choices": args}
    if hint in (int, str):
        return {"type": hint, "metavar": hint.__name__.upper()}
    if origin is tuple and args and typing.get_origin(args[0]) is tuple:
        return {"type": _stages, "metavar": "K:TOKENS,..."}
    if origin is tuple:
        return {"type": _floats if args[0] is float else _names, "metavar": "A,B,..."}
    if origin in (typing.Union, types.UnionType) and any(typing.get_origin(a) is tuple for a in args):
        return {"type": _names, "metavar": "A,B,..."}
    return {"type": _number, "metavar": "NUMBER"}


def _fields(cls, path=()):
    """(path, field, type hint) of every leaf field under `cls`."""
    hints = typing.get_type_hints(cls, include_extras=False)
    for f in dataclasses.fields(cls):
        if f.name in SKIP and not path:
            continue
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            yield from _fields(hint, path + (f.name,))
        else:
            yield path + (f.name,), f, hint


def add_config_flags(parser: argparse.ArgumentParser, base: RunConfig, method) -> None:
    """Flags for every field of the run config and of `method`'s options (defaults from `base`)."""
    recipe = to_dict(base)
    flags = defaultdict(list)
    leaves = list(_fields(RunConfig)) + [((method.section,) + p, f, h) for p, f, h in _fields(method.Config)]
    for path, f, hint in leaves:
        extra = (f.default.json_schema_extra if hasattr(f.default, "json_schema_extra") else None) or {}
        flags[extra.get("flag") or "--" + path[-1].replace("_", "-")].append((path, f, hint))
    groups = {}
    for flag, entries in flags.items():
        path, f, hint = entries[0]
        section = path[0] if len(path) > 1 else "run"
        group = groups.get(section) or groups.setdefault(section, parser.add_argument_group(section))
        group.add_argument(flag, dest=_dest(flag), default=argparse.SUPPRESS, **_kind(hint),
                           help=_help(getattr(f.default, "description", None) or "", _get(recipe, path)))
    parser.set_defaults(_flags={_dest(flag): [p for p, _, _ in entries] for flag, entries in flags.items()})


def _dest(flag: str) -> str:
    return "cfg_" + flag.lstrip("-").replace("-", "_")


def _help(text: str, default) -> str:
    """The field's description, with its default unless the description already says it."""
    if isinstance(default, list):
        default = ",".join(":".join(map(str, d)) if isinstance(d, list) else str(d) for d in default)
    if "default" in text or default in ("", None):
        return text
    return f"{text} (default: {default})"


def _get(recipe: dict, path):
    for key in path:
        recipe = recipe[key]
    return recipe


def config_from_args(args: argparse.Namespace, base: RunConfig) -> RunConfig:
    """`base` with every flag given on the command line, validated as a recipe."""
    recipe = to_dict(base)
    for flag, paths in args._flags.items():
        if flag in vars(args):
            for path in paths:
                _get(recipe, path[:-1])[path[-1]] = vars(args)[flag]
    return from_dict(recipe, "flags")
