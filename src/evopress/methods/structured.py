"""Structured pruning: attention heads and MLP channels per block under an exact parameter budget
(DarwinLM, arXiv 2502.07780).

The database holds every level of every block's attention and MLP (ZipLM OBS with weight update,
from dense activations; `evopress.database.structured`), one store serving every target. A level
costs its exact parameters, and the budget is a band on their total over all blocks, so the
search may trade attention against MLP (the reference keeps a level sum per module kind). The
candidates run stacked from each one's first changed block, each level put on the model as its
output projection with zeros in the removed columns: the same outputs as the smaller model.
Baselines on the same database: uniform (the same level everywhere) and DP over per-sublayer
errors. Training-aware selection, post-training and the physically smaller export are not built
yet: `--export hf` writes the dense-shaped model with the removed columns zero.
"""

from __future__ import annotations

import time
from pathlib import Path

from evopress.config import doc, section
from evopress.errors import InfeasibleBudgetError, RecipeError
from evopress.methods.base import StoreMethod, register
from evopress.search import Space, Unit
from evopress.search.budget import band_below


@section
class StructuredConfig:
    """The database (levels of heads and MLP channels per block) and the target."""

    target: float = doc(0.5, "fraction of the blocks' attention and MLP parameters to keep")
    database: str = doc("", "variant store directory; shareable (default: RUN_DIR/database)", flag="--db")
    level_steps: int = doc(10, "levels per sublayer: equal steps of its parameters, the last removes it")
    channel_group: int = doc(32, "MLP channels removed together per OBS step (and their multiple in a level)")
    database_tokens: int = doc(0, "calibration tokens for the database (0 = --calibration-tokens)")
    damp: float = doc(0.01, "Hessian dampening, as a fraction of its mean diagonal")


@register
class Structured(StoreMethod):
    name, section, Config = "prune", "structured", StructuredConfig
    help = "DarwinLM structured pruning: heads and MLP channels per block under a parameter budget"
    default_baselines = ("uniform", "dp")
    cost_unit = "parameters"
    start_from = "uniform"

    def check(self) -> None:
        s = self.options
        if not 0 < s.target < 1:
            raise RecipeError(f"structured target {s.target} must be the fraction of block parameters kept, in (0, 1)")
        if s.level_steps < 1 or s.channel_group < 1:
            raise RecipeError("--level-steps and --channel-group must be at least 1")

    def _store_config(self, session) -> dict:
        s = self.options
        return {"level_steps": s.level_steps, "channel_group": s.channel_group, "damp": s.damp,
                "calibration": session.protocol["calibration"], "tokens": int(self._tokens(session).numel()),
                "dtype": session.protocol["dtype"]}

    def store(self, session):
        from evopress.database.store import VariantStore
        from evopress.database.structured import structured_units

        if not hasattr(self, "_store"):
            units = structured_units(session.adapter, self.options.level_steps, self.options.channel_group)
            self._store = VariantStore.create_or_open(self.database_dir(), session.fingerprint,
                                                      self._store_config(session), units)
        return self._store

    def build(self, run) -> None:
        from evopress.database.build import build_store
        from evopress.database.structured import structured_block_levels

        s, store = run.session, self.store(run.session)
        if not store.complete:
            table = {u["name"]: u for u in store.units}
            build_store(s.adapter, self._tokens(s), store,
                        structured_block_levels(table, self.options.channel_group, self.options.damp),
                        "structured OBS (heads, MLP channels)", s.device, s.batch_size, run.log)
        run.log(f"database {store.path}: {store.nbytes() / 2**20:.1f} MiB, {len(store.units)} sublayers")

    def space(self, session) -> Space:
        store = self.store(session)
        store.require_complete()
        units = []
        for u in store.units:
            params = store.values(u["block"])["params"][u["name"]]
            kind = u["kind"]
            labels = tuple(f"{kind} {100 * p / params[0]:.0f}%" for p in params)
            units.append(Unit(u["name"], f"block{u['block']}", labels, tuple(float(p) for p in params)))
        self.full = sum(u.costs[0] for u in units)
        return Space(tuple(units))

    def budget(self, space):
        low = sum(min(u.costs) for u in space.units)
        kept = self.options.target * self.full
        if kept < low:
            raise InfeasibleBudgetError(f"keeping {self.options.target:.3f} of the block parameters is below what the "
                                        f"levels reach ({low / self.full:.3f}); choose a larger target")
        return band_below(round(kept), space)

    def bank(self, run):
        from evopress.database.structured import StructBank

        t0 = time.perf_counter()
        bank = StructBank(run.session.adapter, self.store(run.session))
        bank.apply(None)
        run.log(f"variants: {sum(len(v) for v in bank.variants.values())} levels of {len(run.space)} sublayers "
                f"loaded in {time.perf_counter() - t0:.1f}s ({bank.nbytes() / 2**30:.3f} GiB resident)")
        return bank

    def uniform(self, run):
        """Every sublayer at the level nearest the target's share of its parameters, repaired into the band."""
        target = self.options.target
        genome = tuple(min(range(u.num_levels), key=lambda i, u=u: abs(u.costs[i] - target * u.costs[0]))
                       for u in run.space.units)
        return genome if run.budget.satisfied(run.space, genome) else run.budget.repair(run.space, genome, self.rng(1))

    def errors(self, run):
        errors = self.store(run.session).errors()
        return [errors[u.name] for u in run.space.units]

    def describe_target(self) -> str:
        return f"keep {100 * self.options.target:.1f}% of {self.full:,.0f} block parameters"

    def progress(self, space, cost: float) -> str:
        return f"kept {100 * cost / self.full:.2f}%"

    def measures(self, space, genome) -> dict:
        return {"kept params %": 100 * space.cost(genome) / self.full}

    def profile_plot(self, run, plans: dict, path: Path) -> None:
        from evopress.report import block_plot

        blocks = [u["block"] for u in self.store(run.session).units]
        block_plot({name: (blocks, [u.costs[g] / u.costs[0] for u, g in zip(run.space.units, p["genome"])],
                           [u.costs[0] for u in run.space.units]) for name, p in plans.items()},
                   path, f"Kept parameters per block (target {100 * self.options.target:.0f}%)", ylabel="kept (%)")

    def export(self, run, genome, out: Path, fmt: str) -> dict:
        from evopress.compress.depth import DropPlan
        from evopress.export import export

        run.bank.apply(genome)
        report = export(run.session.adapter, DropPlan.dense(run.session.adapter.num_blocks), run.session.tokenizer,
                        out, overwrite=True)
        return {"bytes_on_disk": report.bytes_on_disk}
