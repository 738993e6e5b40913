"""Run configuration: strict, frozen dataclasses validated by pydantic; recipes and flags map onto them.

A recipe is the CLI flags written down: every key is a field below (or of the method's own
section, `drop:`, `sparsity:` ..., which the method registry supplies), and an unknown key, a
wrong type or a value outside its choices is a RecipeError that names the key and the fix. The
CLI is generated from these fields (`evopress.cli.flags`), so a default is written once, here.
A field's `description` is its help text; `json_schema_extra={"flag": ...}` renames its flag.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import ConfigDict, Field, TypeAdapter, ValidationError, field_validator
from pydantic.dataclasses import dataclass

from evopress.errors import RecipeError

STRICT = ConfigDict(extra="forbid", arbitrary_types_allowed=True)
Positive = Annotated[int, Field(ge=1)]
Stages = tuple[tuple[int, ...], ...]  # (survivors, tokens) or (survivors, tokens, training tokens)


def section(cls):
    """A recipe section: frozen, unknown keys refused, every value checked on construction."""
    return dataclass(frozen=True, config=STRICT)(cls)


def doc(default, description: str, **extra):
    """A field with its default and help text (`flag=...` renames the CLI flag)."""
    return Field(default, description=description, json_schema_extra=extra or None)


@section
class DataConfig:
    calibration: str = doc("builtin", "builtin | a local text file or directory | wikitext2 | c4 | fineweb-edu")
    heldout: str = doc("", "evaluation source (default: the held-out split of --calibration)")
    seq_len: Positive = doc(256, "tokens per sequence (at most the model's max_position_embeddings)")
    calibration_tokens: Positive = doc(65_536, "calibration tokens (search and database)")
    heldout_tokens: Positive = doc(65_536, "held-out tokens for perplexity")
    training_tokens: Annotated[int, Field(ge=0)] = doc(
        0, "training pool for training stages and post-training: the windows after the calibration ones")
    seed: int = doc(0, "seed of the data draws and the search")


@section
class SearchConfig:
    """EvoPress settings (reference depth schedule: λ=32, stages 2@2048 then 1@32768)."""

    generations: Annotated[int, Field(ge=0)] = doc(0, "0 = the method's default (depth: k(n-k)/1.5; sparsity: 200)")
    offspring: Positive = doc(32, "offspring per generation")
    stages: Stages = doc(((2, 2048), (1, 32768)), "survivors:tokens per selection stage, e.g. 2:2048,1:32768; "
                         "survivors:tokens:training_tokens trains each candidate first (e.g. 8:1024:10000)")
    initial: Annotated[int, Field(ge=0)] = doc(64, "random candidates for the first parent (0: the method's start)")
    initial_tokens: Positive = doc(2048, "tokens that score the random initial candidates")
    max_switches: Positive = doc(3, "level switches per mutation, at most")
    fitness: Literal["kl", "ppl"] = doc("kl", "kl: KL to the dense model | ppl: perplexity")
    topk: Annotated[int, Field(ge=0)] = doc(0, "0 = full-vocabulary KL; K = top-K teacher log-probs plus the tail")
    seed: int = doc(0, "seed of the data draws and the search")
    evaluator: Literal["batched", "simple"] = doc("batched", "batched: candidates stacked from their first change "
                                                              "(same values, faster) | simple: one at a time")
    compile: bool = doc(False, "batched evaluators: KL and the work between matmuls through torch.compile (GPU)")
    stack_tokens: Positive = doc(65_536, "batched evaluators: candidate tokens run as one stack "
                                         "(more: fewer kernel launches, more memory)")

    @field_validator("stages", mode="before")
    @classmethod
    def _stage_pairs(cls, stages):
        """Each stage is (survivors, tokens[, training tokens]), survivors and tokens at least 1."""
        ok = isinstance(stages, (list, tuple)) and stages and all(
            isinstance(st, (list, tuple)) and len(st) in (2, 3) and all(isinstance(x, int) for x in st)
            and min(st[:2]) >= 1 and min(st) >= 0 for st in stages)
        if not ok:
            raise ValueError("stages are survivors:tokens pairs, both whole numbers >= 1, e.g. 2:2048,1:32768 "
                             "(in a recipe: [[2, 2048], [1, 32768]]), optionally with training tokens: "
                             "8:1024:10000,1:8192:200000")
        return tuple(tuple(st) for st in stages)

    @property
    def training_tokens(self) -> int:
        """The most training tokens a stage gives a candidate (0: no stage trains)."""
        return max(st[2] if len(st) > 2 else 0 for st in self.stages)


@section
class TrainConfig:
    """Training of a compressed model: each candidate of a training stage (DarwinLM's training-aware
    selection) and each plan before its held-out evaluation (post-training). fp32 master weights,
    AdamW; weights that are exactly zero stay zero, so pruned structure cannot regrow."""

    lr: float = doc(1e-4, "peak learning rate (the reference's bf16 1e-5 is mostly rounded away)", flag="--lr")
    betas: tuple[float, ...] = doc((0.9, 0.95), "AdamW betas")
    weight_decay: float = doc(0.0, "AdamW weight decay")
    train_batch: Positive = doc(1, "sequences per optimizer step")
    warmup_steps: Annotated[int, Field(ge=0)] = doc(0, "linear warm-up steps")
    schedule: Literal["constant", "cosine"] = doc("constant", "learning rate after warm-up (cosine ends at lr/10)")
    grad_clip: float = doc(1.0, "gradient norm clip (0: none)")
    loss: Literal["lm", "kd"] = doc("kd", "kd: KL to the dense model's log-probs (in a run: computed once per "
                                          "stage, tokens x vocabulary values) | lm: next-token cross-entropy")
    post_train_tokens: Annotated[int, Field(ge=0)] = doc(
        0, "post-train every plan on this many pool tokens before its held-out perplexity (0: none)")
    lora_rank: Annotated[int, Field(ge=0)] = doc(
        0, "0: train every weight (fp32 masters, 16 bytes a parameter) | r: rank-r adapters on every linear layer, "
           "the weights frozen (a search's stages and a run's post-training at sizes whose masters do not fit)")

    @field_validator("betas")
    @classmethod
    def _two(cls, betas):
        if len(betas) != 2 or not all(0 <= b < 1 for b in betas):
            raise ValueError("betas are two numbers in [0, 1), e.g. 0.9,0.95")
        return betas


@section
class BaselineConfig:
    names: tuple[str, ...] | None = doc(None, "comma list of baselines, or none (default: the method's)",
                                        flag="--baselines")
    random_samples: Positive = doc(64, "random best-of-N: N")
    exhaustive_limit: Positive = doc(5000, "exhaustive search only below this many configurations")


@section
class RunConfig:
    """One run: a method, a model, data, search and baseline settings, and the method's own section.

    `options` is the method's section (its `Config`); in a recipe it is written under the
    method's section key (`drop:`, `sparsity:` ...), and left out it is the method's defaults.
    """

    method: str = doc("drop", "the compression method (see `evopress --help`)")
    model: str = doc("zoo:tiny", "an HF model directory or hub name; zoo:tiny is the built-in model "
                                 "(zoo:small, hidden 256, is trained on first use)")
    device: str = doc("auto", "auto | cpu | cuda | cuda:N")
    dtype: str = doc("auto", "auto | float32 | float16 | bfloat16")
    run_dir: str = doc("", "journal, plans, report and model go here; rerun to resume (default: runs/METHOD)")
    export_format: str = doc("", "export format (the method's list), or none (default: the method's, hf for most)",
                             flag="--export")
    budget: str = doc("", "size of the exported weights, e.g. 4GB, 3.5GiB, 700MB, or bytes; replaces the "
                          "method's --target (for methods whose export saves bytes)")
    batch_size: Positive = doc(8, "calibration rows per forward pass; results do not depend on it")
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    search: SearchConfig = dataclasses.field(default_factory=SearchConfig)
    baselines: BaselineConfig = dataclasses.field(default_factory=BaselineConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    options: Any = None

    @field_validator("budget")
    @classmethod
    def _size(cls, budget: str) -> str:
        if budget:
            parse_bytes(budget)
        return budget

    def __post_init__(self):
        from evopress.methods import get_method

        method = get_method(self.method)
        if self.options is None:
            object.__setattr__(self, "options", method.Config())
        elif not isinstance(self.options, method.Config):
            raise RecipeError(f"method {self.method!r} takes a {method.Config.__name__} as options, "
                              f"got {type(self.options).__name__}")
        if not self.run_dir:
            object.__setattr__(self, "run_dir", f"runs/{self.method}")
        if not self.export_format:
            object.__setattr__(self, "export_format", method.default_export)


UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
         "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_bytes(text: str) -> int:
    """`4GB` (10^9), `3.5GiB` (2^30), `700MB`, `123456`: a size in bytes."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(text))
    if not match or match.group(2).lower() not in UNITS or float(match.group(1)) <= 0:
        raise ValueError(f"a budget is a positive size like 4GB, 3.5GiB, 700MB or a number of bytes, got {text!r}")
    return int(float(match.group(1)) * UNITS[match.group(2).lower()])


def replace(cfg, **changes):
    """`dataclasses.replace`, with validation errors as RecipeErrors."""
    try:
        return dataclasses.replace(cfg, **changes)
    except ValidationError as e:
        raise _error(e, type(cfg), type(cfg).__name__) from None


def _parse(cls, values, where: str):
    if not isinstance(values, dict):
        raise RecipeError(f"{where}: expected a mapping of keys to values, got {values!r}")
    try:
        return TypeAdapter(cls).validate_python(values)
    except ValidationError as e:
        raise _error(e, cls, where) from None


def _error(e: ValidationError, cls, where: str) -> RecipeError:
    """The first problem pydantic found, as a sentence naming the key (and the known keys)."""
    err = e.errors()[0]
    loc = [str(p) for p in err["loc"]]
    if err["type"] == "unexpected_keyword_argument":
        owner = _class_at(cls, loc[:-1])
        known = ", ".join(f.name for f in dataclasses.fields(owner) if f.name != "options")
        return RecipeError(f"unknown key {loc[-1]!r} in {'.'.join([where, *loc[:-1]])}; known keys: {known}")
    msg = err["msg"].removeprefix("Value error, ")
    return RecipeError(f"{'.'.join([where, *loc])} = {err.get('input')!r}: {msg}")


def _class_at(cls, path):
    for name in path:
        if not dataclasses.is_dataclass(cls) or name.isdigit():
            break
        cls = typing.get_type_hints(cls)[name]
    return cls


def from_dict(values: dict, where: str = "recipe") -> RunConfig:
    """A RunConfig from a recipe mapping: the method's section under its key, the rest as RunConfig's."""
    from evopress.methods import METHODS, get_method

    if not isinstance(values, dict):
        raise RecipeError(f"{where}: a recipe is a mapping of keys to values")
    values = dict(values)
    method = get_method(values.get("method", "drop"))
    sections = {m.section: m for m in METHODS.values()}
    options = None
    for key in [k for k in values if k in sections]:
        if sections[key] is not method:
            raise RecipeError(f"{where}: section {key!r} belongs to method {sections[key].name!r}, but the "
                              f"recipe's method is {method.name!r}; remove it or set method: {sections[key].name}")
        options = _parse(method.Config, values.pop(key), f"{where}.{key}")
    if "options" in values:
        raise RecipeError(f"unknown key 'options' in {where}; write the method's settings under {method.section!r}")
    cfg = _parse(RunConfig, values, where)
    return replace(cfg, options=options) if options is not None else cfg


def to_dict(cfg: RunConfig) -> dict:
    """The recipe of `cfg` (the inverse of `from_dict`): plain lists and mappings, YAML-safe."""
    from evopress.methods import get_method

    out = plain(dataclasses.asdict(cfg))
    out[get_method(cfg.method).section] = out.pop("options")
    return out


def plain(value):
    """JSON- and YAML-safe: mappings, lists and numbers stay, tuples become lists, anything else a string."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value if isinstance(value, (int, float, str, bool, type(None))) else str(value)


def load_recipe(path: str | Path) -> RunConfig:
    """Read a YAML recipe: RunConfig's keys, with the method's section under its key."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"recipe {path} not found")
    try:
        values = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise RecipeError(f"{path} is not valid YAML: {e}") from e
    if values is None:
        raise RecipeError(f"{path} is empty; a recipe names at least its method and model "
                          "(e.g. `method: drop` and `model: path/to/model`), see the README")
    return from_dict(values, str(path))
