"""Depth pruning: which attention and MLP sublayers (or whole blocks) to drop (EvoPress §3.3).

No database: a unit's levels are keep (0) and drop (1), applied by swapping the sublayer for a
stand-in that adds zero (`ModelAdapter.apply_plan`). The budget fixes how many are dropped per
kind, so every genome keeps exactly the same parameters. Its own baseline is ShortGPT (block
influence); the candidates of a stage run stacked from each one's first change
(`evopress.eval.stacked`, with `DepthBank.block_step`). Exports: `hf` (whole dropped blocks
deleted) and `nemotron-nas` (dropped sublayers absent).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Union

from evopress.compress.depth import (DropPlan, default_generations, depth_budget, depth_space, drop_count,
                                     genome_from_plan, plan_from_genome)
from evopress.config import doc, parse_bytes, section
from evopress.errors import InfeasibleBudgetError, RecipeError
from evopress.methods.base import Bank, Method, register
from evopress.search import Space, Unit, band_below

KINDS = ("attn", "mlp")


@section
class DropConfig:
    target: Union[int, float] = doc(0.25, "fraction (<1) or count of sublayers (or blocks) dropped per kind")
    granularity: Literal["sublayer", "block"] = doc("sublayer", "sublayer: attention and MLP separately | "
                                                                 "block: whole blocks")


class DepthBank(Bank):
    """Drops applied by swapping sublayers for stand-ins; stacked candidates each run the sublayers they keep."""

    def __init__(self, adapter, space):
        self.adapter, self.space = adapter, space
        self.names = [u.name for u in space.units]
        self.blocks = [int(name.split(".")[1]) for name in self.names]
        self.deciding = {(b, kind): u for u, (unit, b) in enumerate(zip(space.units, self.blocks))
                         for kind in KINDS if unit.group in (kind, "block")}  # the unit that drops (b, kind)
        self._rows: dict[tuple, object] = {}

    def plan(self, genome) -> DropPlan:
        return DropPlan.dense(self.adapter.num_blocks) if genome is None else plan_from_genome(self.space, genome)

    def apply(self, genome) -> None:
        self.adapter.apply_plan(self.plan(genome))

    def block_step(self, block, hidden, kwargs, genomes, reference):
        """Each sublayer once, with its residual, on the stacked rows of the candidates that keep it."""
        from evopress.models.capture import _repeat_batch

        rows = hidden.shape[0] // len(genomes)
        for kind in KINDS:
            unit = self.deciding[block, kind]
            keep = tuple(j for j, g in enumerate(genomes) if g[unit] == 0)
            if not keep:
                continue
            args = {k: _repeat_batch(kwargs[k], rows, len(keep)) for k in ("position_embeddings", "attention_mask")
                    if k in kwargs}
            if len(keep) == len(genomes):  # no gather
                hidden = self.adapter.residual_step(block, kind, hidden, args)
            else:
                sel = self._index(rows, keep, hidden.device)
                hidden[sel] = self.adapter.residual_step(block, kind, hidden[sel], args)
        return hidden

    def _index(self, rows: int, keep: tuple, device):
        """The stacked rows of candidates `keep`, on the device; cached, since every row batch of a
        call repeats the patterns (a copy each time would be a host-to-device transfer per sublayer)."""
        from evopress.eval.batches import device_index

        key = (rows, keep)
        if key not in self._rows:
            if len(self._rows) > 4096:
                self._rows.clear()
            self._rows[key] = device_index([j * rows + r for j in keep for r in range(rows)], device)
        return self._rows[key]


def shortgpt(method, run) -> dict:
    """ShortGPT: drop the blocks whose output is most like their input (block influence); under a
    byte budget, as few as bring the export within it."""
    from evopress.baselines.shortgpt import shortgpt_ranking

    s = run.session
    run.bank.apply(None)
    n = s.adapter.num_blocks
    ranking = shortgpt_ranking(s.model, s.adapter.blocks(), s.calibration, s.batch_size)
    genome_of = [genome_from_plan(run.space, DropPlan.blocks(n, ranking[:k])) for k in range(n)]
    if method.cfg.budget:
        count = next((k for k, g in enumerate(genome_of) if run.space.cost(g) <= run.budget.high), None)
        if count is None:
            run.log("ShortGPT: no whole-block drop meets the budget (every block but one dropped is still above it), "
                    "skipped")
            return None
    else:
        count = drop_count(method.options.target, n)
    return {"name": "ShortGPT", "genome": genome_of[count]}


def _mb(nbytes: float) -> str:
    return f"{nbytes / 1e6:.2f} MB"


def byte_space(adapter, space, fmt: str):
    """`space` with each unit costing the bytes it keeps in an export in `fmt`, `base` the rest:
    a genome's cost is then its export's weight bytes."""
    from evopress.export import weight_size

    n = adapter.num_blocks
    full = weight_size(adapter, DropPlan.dense(n), fmt)[1]
    units, kept = [], 0
    for u, unit in enumerate(space.units):
        alone = tuple(int(i == u) for i in range(len(space)))
        saved = full - weight_size(adapter, plan_from_genome(space, alone), fmt)[1]
        units.append(Unit(unit.name, unit.group, unit.levels, (float(saved), 0.0)))
        kept += saved
    return Space(tuple(units), base=float(full - kept))


@register
class Depth(Method):
    name, section, Config = "drop", "drop", DropConfig
    help = "EvoPress depth pruning: drop attention and MLP sublayers (or blocks)"
    exporters = ("hf", "nemotron-nas")
    default_baselines = ("shortgpt", "random")
    baselines = {"shortgpt": shortgpt}
    byte_budget = True

    @property
    def cost_unit(self) -> str:
        return "bytes" if self.cfg.budget else "parameters"

    @property
    def byte_format(self) -> str:
        """The layout whose bytes a budget counts: the export format's (with none: the one that
        removes what is dropped)."""
        fmt = self.cfg.export_format
        return fmt if fmt != "none" else ("hf" if self.options.granularity == "block" else "nemotron-nas")

    def check(self) -> None:
        if self.cfg.budget and self.byte_format == "hf" and self.options.granularity == "sublayer":
            raise RecipeError("a byte budget with --export hf needs --granularity block: hf keeps the weights of "
                              "a block with one sublayer dropped, so that drop saves no bytes; or use --export "
                              "nemotron-nas, which removes every dropped sublayer")

    def check_model(self, session) -> None:
        if not self.cfg.budget:
            drop_count(self.options.target, session.adapter.num_blocks)  # a clear error for an impossible target
        if self.cfg.export_format == "nemotron-nas":
            from evopress.export.deci import check_expressible, ffn_mult_for

            geo = session.adapter.geometry()
            check_expressible(geo, DropPlan.dense(session.adapter.num_blocks))
            for block in geo.blocks:
                ffn_mult_for(block.intermediate_size, geo.hidden_size)

    def space(self, session):
        a = session.adapter
        self.num_blocks, self.adapter = a.num_blocks, a
        space = depth_space(a.num_blocks, a.sublayer_params("attn"), a.sublayer_params("mlp"), self.options.granularity)
        return byte_space(a, space, self.byte_format) if self.cfg.budget else space

    def budget(self, space):
        if not self.cfg.budget:
            return depth_budget(space, drop_count(self.options.target, self.num_blocks))
        limit = parse_bytes(self.cfg.budget)
        full, least = space.cost((0,) * len(space)), space.base + min(u.costs[0] for u in space.units)
        if limit >= full:
            raise InfeasibleBudgetError(f"budget {self.cfg.budget} is at least the dense model's {_mb(full)} of "
                                        f"weights ({self.byte_format} layout): nothing to drop; give a smaller budget")
        if limit < least:
            raise InfeasibleBudgetError(f"budget {self.cfg.budget} is below {_mb(least)}, the weights with a single "
                                        f"sublayer kept ({self.byte_format} layout); give a larger budget")
        return band_below(limit, space)

    def bank(self, run) -> DepthBank:
        return DepthBank(run.session.adapter, run.space)

    def generations(self, space, budget) -> int:
        if not self.cfg.budget:
            return default_generations(space, drop_count(self.options.target, self.num_blocks))
        saved = space.cost((0,) * len(space)) - budget.high
        per_kind = saved / (sum(u.costs[0] for u in space.units) / len(space)) / len(space.groups())
        return default_generations(space, min(max(1, round(per_kind)), self.num_blocks - 1))

    def describe_target(self) -> str:
        if self.cfg.budget:
            return (f"exported weights at most {self.cfg.budget} ({parse_bytes(self.cfg.budget):,} bytes, "
                    f"{self.byte_format} layout), {self.options.granularity}s traded freely")
        count = drop_count(self.options.target, self.num_blocks)
        return f"drop {count} of {self.num_blocks} per kind ({self.options.granularity})"

    def progress(self, space, cost: float) -> str:
        if self.cfg.budget:
            return f"weights {_mb(cost)}"
        return f"kept {100 * cost / space.cost((0,) * len(space)):.1f}% of block params"

    def levels(self, space, genome) -> dict:
        """Per block what is dropped: none | attn | mlp | attn+mlp (the reference's layer_drop_config)."""
        return {str(i): d for i, d in enumerate(plan_from_genome(space, genome).describe())}

    def measures(self, space, genome) -> dict:
        from evopress.export import weight_size

        plan = plan_from_genome(space, genome)
        dropped = " ".join(f"{i}:{d}" for i, d in enumerate(plan.describe()) if d != "none")
        params, nbytes = weight_size(self.adapter, plan, self.byte_format)
        return {"params M": params / 1e6, "weights MB": nbytes / 1e6, "dropped (block:sublayers)": dropped}

    def profile_plot(self, run, plans: dict, path: Path) -> None:
        from evopress.report import profile_plot

        profile_plot({name: plan_from_genome(run.space, p["genome"]).to_dict() for name, p in plans.items()}, path,
                     f"Dropped sublayers ({self.options.granularity}, target {self.options.target})")

    def export(self, run, genome, out: Path, fmt: str) -> dict:
        from evopress.export import UNTESTED, export
        from evopress.export.directory import tensor_bytes

        plan = run.bank.plan(genome)
        run.bank.apply(genome)
        report = export(run.session.adapter, plan, run.session.tokenizer, out, fmt=fmt, overwrite=True)
        if fmt == "nemotron-nas" and plan.attn[0] and not plan.mlp[0]:
            run.log("note: block 0 keeps its MLP without attention; vLLM 0.32 cannot run that nemotron-nas layout "
                    "(transformers can): export with --export hf for vLLM")
        return {"bytes_on_disk": report.bytes_on_disk, "weight_bytes": tensor_bytes(out),
                "loaders": list(report.loaders), "not_tested": list(UNTESTED[fmt])}
