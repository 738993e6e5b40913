"""Depth pruning: which attention and MLP sublayers (or whole blocks) to drop (EvoPress §3.3).

No database: a unit's levels are keep (0) and drop (1), applied by swapping the sublayer for a
stand-in that adds zero (`ModelAdapter.apply_plan`). The budget fixes how many are dropped per
kind, so every genome keeps exactly the same parameters. Its own baseline is ShortGPT (block
influence); the candidates of a stage run stacked from each one's first change
(`evopress.eval.batched`). Exports: `hf` (whole dropped blocks deleted) and `nemotron-nas`
(dropped sublayers absent).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Union

from evopress.compress.depth import (DropPlan, default_generations, depth_budget, depth_space, drop_count,
                                     genome_from_plan, plan_from_genome)
from evopress.config import doc, section
from evopress.methods.base import Bank, Method, register


@section
class DropConfig:
    target: Union[int, float] = doc(0.25, "fraction (<1) or count of sublayers (or blocks) dropped per kind")
    granularity: Literal["sublayer", "block"] = doc("sublayer", "sublayer: attention and MLP separately | "
                                                                 "block: whole blocks")


class DepthBank(Bank):
    def __init__(self, adapter, space):
        self.adapter, self.space = adapter, space

    def plan(self, genome) -> DropPlan:
        return DropPlan.dense(self.adapter.num_blocks) if genome is None else plan_from_genome(self.space, genome)

    def apply(self, genome) -> None:
        self.adapter.apply_plan(self.plan(genome))


def shortgpt(method, run) -> dict:
    """ShortGPT: drop the blocks whose output is most like their input (block influence)."""
    from evopress.baselines.shortgpt import shortgpt_drop

    s = run.session
    run.bank.apply(None)
    count = drop_count(method.options.target, s.adapter.num_blocks)
    blocks = shortgpt_drop(s.model, s.adapter.blocks(), s.calibration, count)
    return {"name": "ShortGPT", "genome": genome_from_plan(run.space, DropPlan.blocks(s.adapter.num_blocks, blocks))}


@register
class Depth(Method):
    name, section, Config = "drop", "drop", DropConfig
    help = "EvoPress depth pruning: drop attention and MLP sublayers (or blocks)"
    exporters = ("hf", "nemotron-nas")
    default_baselines = ("shortgpt", "random")
    baselines = {"shortgpt": shortgpt}

    def check_model(self, session) -> None:
        drop_count(self.options.target, session.adapter.num_blocks)  # a clear error for an impossible target
        if self.cfg.export_format == "nemotron-nas":
            from evopress.export.deci import check_expressible, ffn_mult_for

            geo = session.adapter.geometry()
            check_expressible(geo, DropPlan.dense(session.adapter.num_blocks))
            for block in geo.blocks:
                ffn_mult_for(block.intermediate_size, geo.hidden_size)

    def space(self, session):
        a = session.adapter
        self.num_blocks = a.num_blocks
        return depth_space(a.num_blocks, a.sublayer_params("attn"), a.sublayer_params("mlp"), self.options.granularity)

    def budget(self, space):
        return depth_budget(space, drop_count(self.options.target, self.num_blocks))

    def bank(self, run) -> DepthBank:
        return DepthBank(run.session.adapter, run.space)

    def evaluator(self, run):
        from evopress.eval.batched import BatchedDepthKL

        s, bank = run.session, run.bank
        return lambda targets, **options: BatchedDepthKL(s.adapter, bank.plan, s.calibration, targets, **options)

    def generations(self, space, budget) -> int:
        return default_generations(space, drop_count(self.options.target, self.num_blocks))

    def describe_target(self) -> str:
        count = drop_count(self.options.target, self.num_blocks)
        return f"drop {count} of {self.num_blocks} per kind ({self.options.granularity})"

    def progress(self, space, cost: float) -> str:
        return f"kept {100 * cost / space.cost((0,) * len(space)):.1f}% of block params"

    def levels(self, space, genome) -> dict:
        """Per block what is dropped: none | attn | mlp | attn+mlp (the reference's layer_drop_config)."""
        return {str(i): d for i, d in enumerate(plan_from_genome(space, genome).describe())}

    def measures(self, space, genome) -> dict:
        plan = plan_from_genome(space, genome)
        dropped = " ".join(f"{i}:{d}" for i, d in enumerate(plan.describe()) if d != "none")
        return {"dropped (block:sublayers)": dropped}

    def profile_plot(self, run, plans: dict, path: Path) -> None:
        from evopress.report import profile_plot

        profile_plot({name: plan_from_genome(run.space, p["genome"]).to_dict() for name, p in plans.items()}, path,
                     f"Dropped sublayers ({self.options.granularity}, target {self.options.target})")

    def export(self, run, genome, out: Path, fmt: str) -> dict:
        from evopress.export import export

        plan = run.bank.plan(genome)
        run.bank.apply(genome)
        report = export(run.session.adapter, plan, run.session.tokenizer, out, fmt=fmt, overwrite=True)
        return {"bytes_on_disk": report.bytes_on_disk, "loaders": list(report.loaders),
                "params": run.space.cost(genome)}
