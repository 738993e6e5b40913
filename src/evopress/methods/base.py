"""What a compression method is, and the registry that makes one a CLI command and a recipe section.

A method says what its units and levels are (`space`), how the user's target becomes an exact
budget (`budget`), how its database is built (`build`, where it has one), how a genome is put on
the model (`bank`), which baselines only it has, and how its result is written (`export`).
Everything else, the run skeleton, the search, the shared baselines, evaluation, the run
directory, the report and the CLI, lives in `evopress.run` and knows no method by name.

    @register
    class Depth(Method):
        name, section, Config = "drop", "drop", DropConfig
        ...

`run` below is the `evopress.run.Run` of the current run: the config, the loaded session, the
space, budget, bank, objective and journal, and `score(genome)`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, ClassVar

from evopress.errors import RecipeError
from evopress.search import Budget, CostBudget, Genome, Space

METHODS: dict[str, type["Method"]] = {}


def register(cls: type["Method"]) -> type["Method"]:
    """Make `cls` a method: `evopress <name>`, `method: <name>`, its options under `<section>:`."""
    taken = {m.section: n for n, m in METHODS.items() if n != cls.name}
    if cls.section in taken:
        raise ValueError(f"recipe section {cls.section!r} is taken by method {taken[cls.section]!r}")
    METHODS[cls.name] = cls
    return cls


def get_method(name: str) -> type["Method"]:
    if name not in METHODS:
        raise RecipeError(f"unknown method {name!r}; available: {', '.join(METHODS)}")
    return METHODS[name]


class Bank:
    """What every evaluator needs of a method: its levels put on the model, cheaply.

    `adapter` is the model's adapter, `names` the units, `blocks` the decoder block of each unit
    (what lets the stacked evaluator, `evopress.eval.stacked`, start a candidate at its first
    changed block; a bank without `blocks` is scored by the straightforward objective only).
    """

    adapter = None
    names: list[str]
    blocks: list[int] | None = None

    def apply(self, genome: Genome | None) -> None:
        """Put `genome`'s levels on the model (None: the dense model)."""
        raise NotImplementedError

    def block_step(self, block: int, hidden, kwargs: dict, genomes: list, reference: Genome):
        """Block `block` on candidates stacked along the rows of `hidden` (`genomes[j]` owns the
        j-th equal share of rows), the model set to `reference`; returns the stacked output.

        This one runs each candidate's rows with its levels applied, one after the other; a bank
        that can run all candidates in one pass overrides it."""
        import torch

        rows = hidden.shape[0] // len(genomes)
        out = torch.empty_like(hidden)
        for j, genome in enumerate(genomes):
            self.apply(genome)
            out[j * rows:(j + 1) * rows] = self.adapter.stacked_block(block, hidden[j * rows:(j + 1) * rows],
                                                                      kwargs, 1, _unchanged)
        self.apply(reference)
        return out


def _unchanged(module, x, out):
    return out


class Method:
    name: ClassVar[str]  # the CLI subcommand and the recipe's `method:` value
    section: ClassVar[str]  # the recipe key of its options
    Config: ClassVar[type]  # its options: a `evopress.config.section` class
    help: ClassVar[str] = ""
    exporters: ClassVar[tuple[str, ...]] = ("hf",)
    default_export: ClassVar[str] = "hf"  # --export when not given
    default_baselines: ClassVar[tuple[str, ...]] = ("random",)
    baselines: ClassVar[dict[str, Callable]] = {}  # its own: name -> fn(method, run) -> {"genome", ...}
    cost_unit: ClassVar[str] = "parameters"  # what `Unit.costs` count
    byte_budget: ClassVar[bool] = False  # its export saves bytes: `budget` (--budget 4GB) replaces its target
    start_from: ClassVar[str] = "random"  # first parent: best of random genomes, or "uniform"

    def __init__(self, cfg):
        self.cfg, self.options = cfg, cfg.options

    def resolved(self):
        """The config with this method's paths made absolute (shared by every process of a run)."""
        return self.cfg

    # Checks before anything expensive runs.

    def check(self) -> None:
        """Refuse impossible settings from the config alone (no model loaded yet)."""

    def check_model(self, session) -> None:
        """Refuse settings this model cannot take, once it is loaded (before any database or search)."""

    # The database (methods with one).

    def build(self, run) -> None:
        """Build or finish the database, resumably; a method without one does nothing."""

    def database(self, run) -> dict | None:
        """What the run records of its database (path, bytes, config), if it has one."""
        return None

    # The search.

    def space(self, session) -> Space:
        raise NotImplementedError

    def budget(self, space: Space) -> Budget | CostBudget:
        raise NotImplementedError

    def bank(self, run) -> Bank:
        raise NotImplementedError

    def generations(self, space: Space, budget) -> int:
        """Generations when `search.generations` is 0."""
        return 200

    def uniform(self, run) -> Genome | None:
        """The same level everywhere, where the budget allows it (None: no such genome)."""
        return None

    def errors(self, run) -> list[list[float]] | None:
        """Per unit and level an additive error estimate, for the DP baseline (None: none)."""
        return None

    # What people read.

    def levels(self, space: Space, genome: Genome) -> dict[str, str]:
        """Readable level per unit."""
        return space.describe(genome)

    def measures(self, space: Space, genome: Genome) -> dict[str, float]:
        """Summary figures of a genome (shown in the table), e.g. kept parameters or sparsity."""
        return {}

    def describe_target(self) -> str:
        """The target in words, for the log."""
        return ""

    def progress(self, space: Space, cost: float) -> str:
        """A genome's cost in words, for the per-generation line."""
        return f"cost {cost:g} {self.cost_unit}"

    def profile_plot(self, run, plans: dict, path: Path) -> list[str] | None:
        """A per-layer picture of every plan at `path`; returns the names of any further plots it wrote."""

    # Export.

    def export(self, run, genome: Genome, out: Path, fmt: str) -> dict:
        raise NotImplementedError


class StoreMethod(Method):
    """A method whose levels live in a variant store (`evopress.database`): its options have
    `database` (the store directory, default RUN_DIR/database) and `database_tokens`; it says
    what the store holds (`units`, `_store_config`) and how its missing blocks are built (`fill`)."""

    unit_word: ClassVar[str] = "layers"  # what the units are called in the log

    def units(self, session) -> list[dict]:
        """The store's units (name, block, shape and what its levels are)."""
        raise NotImplementedError

    def fill(self, run, store) -> None:
        """Build the blocks `store` still lacks (`evopress.database.build`), resumably."""
        raise NotImplementedError

    def store(self, session):
        from evopress.database.store import VariantStore

        if not hasattr(self, "_store"):
            self._store = VariantStore.create_or_open(self.database_dir(), session.fingerprint,
                                                      self._store_config(session), self.units(session))
        return self._store

    def build(self, run) -> None:
        store = self.store(run.session)
        if not store.complete:
            self.fill(run, store)
        run.log(f"database {store.path}: {store.nbytes() / 2**20:.1f} MiB, {len(store.units)} {self.unit_word}")

    def database_dir(self) -> Path:
        return Path(self.options.database or Path(self.cfg.run_dir) / "database").expanduser().resolve()

    def resolved(self):
        from evopress.config import replace

        return replace(self.cfg, options=replace(self.options, database=str(self.database_dir())))

    def rng(self, salt: int):
        import numpy as np

        return np.random.default_rng([self.cfg.search.seed, salt])

    def _tokens(self, session):
        """The calibration rows the database is built from (`database_tokens` of them, 0: all)."""
        tokens = session.calibration
        if self.options.database_tokens:
            tokens = tokens[:max(1, self.options.database_tokens // tokens.shape[1])]
        return tokens

    def database(self, run) -> dict:
        store = self.store(run.session)
        return {"path": str(store.path), "bytes": store.nbytes(), "config": store.manifest["config"]}

