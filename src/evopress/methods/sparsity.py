"""Unstructured sparsity: one sparsity level per linear layer under an exact budget (EvoPress §2.1, §4).

The database holds every level of every linear layer (SparseGPT, Wanda or magnitude, all levels
from one Hessian; `evopress.database`), one store serving every target inside its grid. A level
costs its exact count of kept weights, and the budget is a band on their total, so the average
sparsity holds exactly. The search starts from the uniform profile, as the reference does; the
candidates run stacked from each one's first changed block (`evopress.eval.stacked`). Its own
baseline is OWL. Export: a dense-with-zeros HF directory plus the per-layer profile and an
llm-compressor recipe (`evopress.export.sparsity`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Literal


from evopress.compress.sparsity import (SparsityGrid, nearest_genome, numels, overall_sparsity, profile,
                                        sparsity_budget, sparsity_space, uniform_genome, unit_table)
from evopress.config import doc, section
from evopress.errors import DatabaseError, InfeasibleBudgetError, RecipeError
from evopress.methods.base import StoreMethod, register


@section
class SparsityConfig:
    """The database (a grid of levels per linear layer) and the target."""

    target: float = doc(0.6, "average sparsity over all prunable linear weights")
    database: str = doc("", "variant store directory; shareable (default: RUN_DIR/database)", flag="--db")
    builder: Literal["sparsegpt", "wanda", "magnitude"] = doc("sparsegpt", "how each level is made")
    grid: tuple[float, ...] = doc((), "low,high,step of the sparsity levels (default: target +- 0.2 in 0.025 steps)")
    small_step: float = doc(0.0125, "finer step for matrices under half the largest one's size")
    database_tokens: int = doc(0, "calibration tokens for the database (0 = --calibration-tokens)")
    blocksize: int = doc(128, "SparseGPT column block size")
    damp: float = doc(0.01, "Hessian dampening, as a fraction of its mean diagonal")


def grid_of(s: SparsityConfig) -> SparsityGrid:
    if s.grid:
        if len(s.grid) != 3:
            raise RecipeError(f"sparsity.grid is (low, high, step), got {list(s.grid)}; e.g. --grid 0.4,0.9,0.025")
        return SparsityGrid(s.grid[0], s.grid[1], s.grid[2], min(s.small_step, s.grid[2]))
    return SparsityGrid(step=0.025, small_step=s.small_step).around(s.target)


def owl(method, run) -> dict:
    """OWL with (λ, M) chosen by calibration KL over the reference's 5 × 4 grid."""
    from evopress.compress.owl import LAMBDAS, MS, block_sparsities, outlier_density

    units, bank, target = method.store(run.session).units, run.bank, method.options.target
    blocks = sorted({u["block"] for u in units})
    names = {b: [u["name"] for u in units if u["block"] == b] for b in blocks}
    best = None
    for m in MS:
        lod = [outlier_density([bank.dense[n] for n in names[b]], [bank.act_sq[n] for n in names[b]], m)
               for b in blocks]
        for lam in LAMBDAS:
            per_block = dict(zip(blocks, block_sparsities(lod, target, lam)))
            genome = nearest_genome(run.space, [per_block[u["block"]] for u in units])
            if not run.budget.satisfied(run.space, genome):
                genome = run.budget.repair(run.space, genome, method.rng(2))
            kl = run.score(genome)
            if best is None or kl < best[0]:
                best = (kl, genome, lam, m)
    run.log(f"OWL: best lambda={best[2]} M={best[3]} of {len(LAMBDAS) * len(MS)} (calibration KL)")
    return {"name": "OWL", "genome": best[1], "lambda": best[2], "M": best[3]}


@register
class Sparsity(StoreMethod):
    name, section, Config = "sparsify", "sparsity", SparsityConfig
    help = "EvoPress unstructured sparsity: database, search, baselines, evaluation, export"
    default_baselines = ("uniform", "owl", "dp")
    baselines = {"owl": owl}
    cost_unit = "kept weights"
    start_from = "uniform"

    def check(self) -> None:
        s = self.options
        if not 0 < s.target < 1:
            raise RecipeError(f"sparsity target {s.target} must be a fraction in (0, 1), e.g. 0.6")
        grid = grid_of(s)
        if not grid.low <= s.target <= grid.high:
            raise InfeasibleBudgetError(f"sparsity target {s.target} lies outside the database grid "
                                        f"[{grid.low}, {grid.high}]; choose a target inside it, or a --grid "
                                        "that covers it")

    def _store_config(self, session) -> dict:
        s, grid = self.options, grid_of(self.options)
        return {"builder": s.builder, "grid": [grid.low, grid.high, grid.step, grid.small_step, grid.small_fraction],
                "blocksize": s.blocksize, "damp": s.damp, "calibration": session.protocol["calibration"],
                "tokens": int(self._tokens(session).numel()), "dtype": session.protocol["dtype"]}

    def check_model(self, session) -> None:
        """A shared store built with another grid: say which --grid reads it."""
        from evopress.database.store import MANIFEST, VariantStore

        path = self.database_dir()
        if not (path / MANIFEST).exists():
            return
        stored = VariantStore.open(path, session.fingerprint).manifest["config"]["grid"]
        grid = grid_of(self.options)
        fresh = [grid.low, grid.high, grid.step, grid.small_step, grid.small_fraction]
        if [round(x, 9) for x in stored] != [round(x, 9) for x in fresh]:
            raise DatabaseError(f"the database at {path} has the grid low={stored[0]}, high={stored[1]}, "
                                f"step={stored[2]} (small step {stored[3]}); pass --grid {stored[0]},{stored[1]},"
                                f"{stored[2]} --small-step {stored[3]} to use it, or another --db to build a new one")

    def units(self, session) -> list[dict]:
        from evopress.database.build import matrices

        return unit_table(matrices(session.adapter), grid_of(self.options))

    def fill(self, run, store) -> None:
        from evopress.database.build import build_sparsity_store

        s = run.session
        build_sparsity_store(s.adapter, self._tokens(s), store, self.options.builder, s.device,
                             s.batch_size, self.options.blocksize, self.options.damp, run.log)

    def space(self, session):
        store = self.store(session)
        store.require_complete()
        self.numels = numels(store.units)
        return sparsity_space(store.units)

    def budget(self, space):
        return sparsity_budget(space, self.numels, self.options.target)

    def bank(self, run):
        from evopress.database.bank import SparseBank

        t0 = time.perf_counter()
        bank = SparseBank(run.session.adapter, self.store(run.session))
        bank.apply(None)
        run.log(f"variants: {sum(len(v) for v in bank.variants.values())} levels of {len(run.space)} layers "
                f"re-derived from the database in {time.perf_counter() - t0:.1f}s "
                f"({bank.nbytes() / 2**30:.2f} GiB resident)")
        return bank

    def uniform(self, run):
        return uniform_genome(run.space, run.budget, self.options.target, self.rng(1))

    def errors(self, run):
        errors = self.store(run.session).errors()
        return [errors[u.name] for u in run.space.units]

    def describe_target(self) -> str:
        return (f"{100 * self.options.target:.1f}% average sparsity over {sum(self.numels):,} weights in "
                f"{len(self.numels)} layers")

    def progress(self, space, cost: float) -> str:
        return f"sparsity {100 * (1 - cost / sum(self.numels)):.2f}%"

    def measures(self, space, genome) -> dict:
        return {"sparsity %": 100 * overall_sparsity(space, genome, self.numels)}

    def profile_plot(self, run, plans: dict, path: Path) -> None:
        from evopress.report import block_plot

        blocks = [u["block"] for u in self.store(run.session).units]
        block_plot({name: (blocks, [float(run.space.units[i].levels[g]) for i, g in enumerate(p["genome"])],
                              self.numels) for name, p in plans.items()},
                      path, f"Per-block sparsity (target {100 * self.options.target:.0f}%)")

    def export(self, run, genome, out: Path, fmt: str) -> dict:
        from evopress.compress.depth import DropPlan
        from evopress.export import export
        from evopress.export.sparsity import measure, write_profile

        adapter = run.session.adapter
        run.bank.apply(genome)
        report = export(adapter, DropPlan.dense(adapter.num_blocks), run.session.tokenizer, out, overwrite=True)
        layers = profile(run.space, genome)
        overall = overall_sparsity(run.space, genome, self.numels)
        write_profile(out, layers, self.options.target, overall, self.options.builder)
        measured = measure(out, list(layers))
        measured_overall = sum(measured[u.name] * n for u, n in zip(run.space.units, self.numels)) / sum(self.numels)
        worst = max(abs(measured[n] - s) for n, s in layers.items())
        run.log(f"measured sparsity {100 * measured_overall:.3f}% (target {100 * self.options.target:.1f}%), "
                f"largest per-layer deviation from its level {100 * worst:.4f} pp")
        return {"bytes_on_disk": report.bytes_on_disk, "measured_overall": measured_overall,
                "measured_max_layer_deviation": worst, "measured": measured}
