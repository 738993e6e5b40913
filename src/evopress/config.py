"""Run configuration: frozen dataclasses, and strict YAML recipes that map onto them.

A recipe is the same thing as the CLI flags, written down: every key maps to a field below, and
an unknown key is an error naming the known ones (a typo must never be silently ignored).
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from evopress.errors import RecipeError


@dataclass(frozen=True)
class DataConfig:
    calibration: str = "builtin"  # builtin | a local text file or directory | wikitext2 | c4 | fineweb-edu
    heldout: str = ""  # evaluation source; empty = the held-out split of `calibration`
    seq_len: int = 256
    calibration_tokens: int = 65_536
    heldout_tokens: int = 65_536
    seed: int = 0


@dataclass(frozen=True)
class DropConfig:
    target: float = 0.25  # fraction of sublayers (or blocks) per kind, or a count when >= 1
    granularity: str = "sublayer"  # sublayer: attention and MLP separately | block: whole blocks


@dataclass(frozen=True)
class SparsityConfig:
    """Unstructured sparsity: the database (a grid of levels per linear layer) and the target."""

    target: float = 0.6  # average sparsity over all prunable linear weights
    database: str = ""  # variant store directory; empty = RUN_DIR/database
    builder: str = "sparsegpt"  # sparsegpt | wanda | magnitude
    grid: tuple[float, ...] = ()  # (low, high, step); empty = target ± 0.2 in steps of 0.025
    small_step: float = 0.0125  # finer step for matrices under half the largest one's size
    database_tokens: int = 0  # calibration tokens for the database; 0 = data.calibration_tokens
    blocksize: int = 128
    damp: float = 0.01
    baselines: tuple[str, ...] = ("uniform", "owl", "dp")  # uniform | owl | dp | random


@dataclass(frozen=True)
class SearchConfig:
    """EvoPress settings (reference depth schedule: λ=32, stages 2@2048 then 1@32768)."""

    generations: int = 0  # 0 = the reference's k(n-k)/1.5
    offspring: int = 32
    stages: tuple[tuple[int, int], ...] = ((2, 2048), (1, 32768))  # (survivors, tokens) per stage
    initial: int = 64
    initial_tokens: int = 2048
    max_switches: int = 3
    fitness: str = "kl"  # kl | ppl
    topk: int = 0  # 0 = full-vocabulary KL; K = top-K teacher log-probs plus the tail mass
    seed: int = 0
    evaluator: str = "batched"  # batched: candidates together from their first change (depth, KL) | simple
    compile: bool = False  # batched evaluators: KL and the work between matmuls through torch.compile (GPU)
    stack_tokens: int = 65_536  # batched evaluators: candidate tokens run as one stack (more: fewer launches, more memory)


@dataclass(frozen=True)
class BaselineConfig:
    names: tuple[str, ...] = ("shortgpt", "random")  # shortgpt | random | exhaustive
    random_samples: int = 64
    exhaustive_limit: int = 5000


@dataclass(frozen=True)
class RunConfig:
    method: str = "drop"  # drop: depth pruning | sparsify: unstructured sparsity
    model: str = "zoo:tiny"  # an HF model directory or hub name; zoo:tiny is the built-in model
    device: str = "auto"
    dtype: str = "auto"
    run_dir: str = "runs/drop"
    export_format: str = "hf"  # hf | nemotron-nas | none
    batch_size: int = 8  # calibration rows per forward pass; results do not depend on it
    data: DataConfig = field(default_factory=DataConfig)
    drop: DropConfig = field(default_factory=DropConfig)
    sparsity: SparsityConfig = field(default_factory=SparsityConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    baselines: BaselineConfig = field(default_factory=BaselineConfig)


CHOICES = {
    ("", "method"): ("drop", "sparsify"),
    ("sparsity", "builder"): ("sparsegpt", "wanda", "magnitude"),
    ("drop", "granularity"): ("sublayer", "block"),
    ("search", "fitness"): ("kl", "ppl"),
    ("search", "evaluator"): ("batched", "simple"),
    ("", "export_format"): ("hf", "nemotron-nas", "none"),
}


def _coerce(value, hint, where: str):
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise RecipeError(f"{where}: expected a mapping, got {value!r}")
        return from_dict(hint, value, where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise RecipeError(f"{where}: expected a list, got {value!r}")
        args = typing.get_args(hint)
        inner = args[0]
        return tuple(_coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value))
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return value if isinstance(value, int) else float(value)
    if hint in (int, str) and isinstance(value, hint) and not isinstance(value, bool):
        return value
    if hint is bool and isinstance(value, bool):
        return value
    raise RecipeError(f"{where}: expected {getattr(hint, '__name__', hint)}, got {value!r}")


def from_dict(cls, values: dict, where: str = "recipe"):
    """Build dataclass `cls` from a mapping; unknown keys and wrong types are RecipeErrors."""
    hints = typing.get_type_hints(cls)
    known = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise RecipeError(f"unknown key {unknown[0]!r} in {where}; known keys: {', '.join(known)}")
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}") for k, v in values.items()}
    out = cls(**kwargs)
    section = "" if cls is RunConfig else where.rsplit(".", 1)[-1]
    for (sec, key), allowed in CHOICES.items():
        if sec == section and key in kwargs and kwargs[key] not in allowed:
            raise RecipeError(f"{where}.{key} = {kwargs[key]!r}; choose one of {', '.join(allowed)}")
    return out


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def load_recipe(path: str | Path) -> RunConfig:
    """Read a YAML recipe: RunConfig's keys, with `method: drop` or `method: sparsify`."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"recipe {path} not found")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise RecipeError(f"{path} is not valid YAML: {e}") from e
    if not isinstance(values, dict):
        raise RecipeError(f"{path}: a recipe is a mapping of keys to values")
    return from_dict(RunConfig, values, str(path))
