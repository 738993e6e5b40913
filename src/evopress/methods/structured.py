"""Structured pruning: attention heads and MLP channels per block under an exact parameter budget
(DarwinLM, arXiv 2502.07780).

The database holds every level of every block's attention and MLP (ZipLM OBS with weight update,
from dense activations; `evopress.database.structured`), one store serving every target. A level
costs its exact parameters, and the budget is a band on their total over all blocks, so the
search may trade attention against MLP (the reference keeps a level sum per module kind). The
candidates run stacked from each one's first changed block, each level put on the model as its
output projection with zeros in the removed columns: the same outputs as the smaller model.
Baselines on the same database: uniform (the same level everywhere) and DP over per-sublayer
errors. Training-aware selection and post-training are not built yet.

Exports (`evopress.export.pruned`): `pruned` is the physically smaller model (per-layer heads, KV
heads and MLP widths; transformers with trust_remote_code), `nemotron-nas` the same in DeciLM
`block_configs` (vLLM reads it natively), `hf` the dense-shaped model with the removed columns
zero. Nemotron-NAS can write only some levels (an attention full or absent, MLP widths multiples
of 256 through `ffn_mult`), so with `--export nemotron-nas` the search picks among those alone
(`--levels-for`): a genome's level i of a unit is then store level `store_levels[unit][i]`, a
mapping the bank applies once, at load, and `errors` follows.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Literal

from evopress.config import doc, section
from evopress.errors import ExportError, InfeasibleBudgetError, RecipeError
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
    levels_for: Literal["auto", "any", "nemotron-nas"] = doc(
        "auto", "levels the search picks from: any | nemotron-nas (only those that format writes: attention "
                "full or absent, MLP widths multiples of 256) | auto (nemotron-nas with --export nemotron-nas)")


@register
class Structured(StoreMethod):
    name, section, Config = "prune", "structured", StructuredConfig
    help = "DarwinLM structured pruning: heads and MLP channels per block under a parameter budget"
    exporters = ("hf", "pruned", "nemotron-nas")
    default_baselines = ("uniform", "dp")
    cost_unit = "parameters"
    start_from = "uniform"
    unit_word = "sublayers"

    def check(self) -> None:
        s = self.options
        if not 0 < s.target < 1:
            raise RecipeError(f"structured target {s.target} must be the fraction of block parameters kept, in (0, 1)")
        if s.level_steps < 1 or s.channel_group < 1:
            raise RecipeError("--level-steps and --channel-group must be at least 1")
        if self.cfg.export_format == "nemotron-nas" and self.level_format() != "nemotron-nas":
            raise RecipeError("--export nemotron-nas writes only some structured levels (attention full or absent, "
                              "MLP widths multiples of 256), but this run searches, or searched, every level "
                              "(--levels-for any); search with --export nemotron-nas, or export as pruned")

    def level_format(self) -> str:
        """The format whose levels the search picks from ("any" or "nemotron-nas")."""
        if self.options.levels_for != "auto":
            return self.options.levels_for
        return "nemotron-nas" if self.cfg.export_format == "nemotron-nas" else "any"

    def resolved(self):
        """`levels_for` made explicit, so every process, the recorded config and a later re-export in
        another format (`evopress export`) read the genome over the same levels."""
        from evopress.config import replace

        cfg = super().resolved()
        return replace(cfg, options=replace(cfg.options, levels_for=self.level_format()))

    def check_model(self, session) -> None:
        """Refuse, before the database is built, a model the chosen export cannot write."""
        from evopress.compress.depth import DropPlan
        from evopress.export.deci import check_expressible, ffn_mult_for
        from evopress.export.pruned import check_pruned_model

        geo = session.adapter.geometry()
        if self.cfg.export_format == "pruned":
            check_pruned_model(geo)
        if self.level_format() == "nemotron-nas":
            check_expressible(geo, DropPlan.dense(session.adapter.num_blocks))
            for block in geo.blocks:
                ffn_mult_for(block.intermediate_size, geo.hidden_size)

    def _store_config(self, session) -> dict:
        s = self.options
        return {"level_steps": s.level_steps, "channel_group": s.channel_group, "damp": s.damp,
                "calibration": session.protocol["calibration"], "tokens": int(self._tokens(session).numel()),
                "dtype": session.protocol["dtype"]}

    def units(self, session) -> list[dict]:
        from evopress.database.structured import structured_units

        return structured_units(session.adapter, self.options.level_steps, self.options.channel_group)

    def fill(self, run, store) -> None:
        from evopress.database.build import build_store
        from evopress.database.structured import structured_block_levels

        s, table = run.session, {u["name"]: u for u in store.units}
        build_store(s.adapter, self._tokens(s), store,
                    structured_block_levels(table, self.options.channel_group, self.options.damp),
                    "structured OBS (heads, MLP channels)", s.device, s.batch_size, run.log)

    def space(self, session) -> Space:
        """One unit per sublayer; its levels are the store's (or, with `levels_for` nemotron-nas, those
        the format writes, each size once), costing their exact parameters."""
        store, geo = self.store(session), session.adapter.geometry()
        store.require_complete()
        units, self.store_levels = [], {}
        for u in store.units:
            values = store.values(u["block"])
            params = values["params"][u["name"]]
            levels = self.searchable(geo, u, params, values["kv_heads"].get(u["name"]))
            self.store_levels[u["name"]] = levels
            kind = u["kind"]
            labels = tuple(f"{kind} {100 * params[i] / params[0]:.0f}%" for i in levels)
            units.append(Unit(u["name"], f"block{u['block']}", labels, tuple(float(params[i]) for i in levels)))
        if all(len(levels) == 1 for levels in self.store_levels.values()):
            raise RecipeError(f"no sublayer has a level other than dense that {self.level_format()} can write; "
                              "choose another export format, or --levels-for any")
        self.full = sum(u.costs[0] for u in units)
        return Space(tuple(units))

    def searchable(self, geo, unit: dict, params: list, kv_heads: list | None) -> list[int]:
        """Store levels of `unit` the search may pick: all of them, or (nemotron-nas) those the format
        writes, the first of each size."""
        if self.level_format() == "any":
            return list(range(len(params)))
        from evopress.compress.structured import MLP, Attention
        from evopress.export.deci import expressible_width

        attn, mlp, first = Attention.of(geo), MLP.of(geo), {}
        for i, p in enumerate(params):
            if unit["kind"] == "attn":
                heads = level_heads(attn, p, len(kv_heads[i]))
                size, ok = (heads, len(kv_heads[i])), heads in (0, attn.heads)  # full (all KV heads) or absent
            else:
                size = mlp.intermediate - unit["removes"][i]
                ok = expressible_width(size, geo.hidden_size)
            if ok and size not in first:
                first[size] = i
        return sorted(first.values())

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
        bank = StructBank(run.session.adapter, self.store(run.session), self.store_levels)
        bank.apply(None)
        if self.level_format() == "nemotron-nas":
            total = sum(len(p) for b in range(run.session.adapter.num_blocks)
                        for p in self.store(run.session).values(b)["params"].values())
            run.log(f"searching the {sum(map(len, self.store_levels.values()))} of {total} levels nemotron-nas "
                    "writes (attention full or absent, MLP widths multiples of 256; --channel-group 256 makes "
                    "every MLP level one)")
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
        return [[errors[u.name][i] for i in self.store_levels[u.name]] for u in run.space.units]

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
        from evopress.export.directory import tensor_bytes

        if fmt == "hf":
            from evopress.compress.depth import DropPlan
            from evopress.export import export

            run.bank.apply(genome)
            report = export(run.session.adapter, DropPlan.dense(run.session.adapter.num_blocks),
                            run.session.tokenizer, out, overwrite=True)
            return {"bytes_on_disk": report.bytes_on_disk, "weight_bytes": tensor_bytes(out)}
        from evopress.export.pruned import export_structured

        record = {"cost": round(run.space.cost(genome)), "cost_unit": self.cost_unit,
                  "levels": self.levels(run.space, genome),
                  "store_levels": {u.name: self.store_levels[u.name][g] for u, g in zip(run.space.units, genome)}}
        written = export_structured(run.session.adapter, self.cuts(run.bank, genome), run.session.tokenizer,
                                    out, fmt, record, overwrite=True)
        block_params = written["params"] - self.outside_params(run.session.adapter, written["layer_sizes"], fmt)
        if block_params != record["cost"]:  # the searched cost is what the export holds
            raise ExportError(f"the export holds {block_params:,} block parameters, the plan costs "
                              f"{record['cost']:,.0f}; please report this")
        first = written["layer_sizes"][0]
        if fmt == "nemotron-nas" and not first[0] and first[2]:
            run.log("note: block 0 keeps its MLP without attention; vLLM 0.32 cannot run that nemotron-nas layout "
                    "(transformers can)")
        return {"params": written["params"], "block_params": block_params, "weight_bytes": tensor_bytes(out),
                "layer_sizes": [list(s) for s in written["layer_sizes"]]}

    @staticmethod
    def cuts(bank, genome) -> list[dict]:
        """Per block what its attention and MLP keep at `genome`'s levels (`evopress.export.pruned.Cut`)."""
        from evopress.export.pruned import Cut

        cuts = [{} for _ in range(bank.adapter.num_blocks)]
        for name, block, level in zip(bank.names, bank.blocks, genome):
            kept, kv_heads, weight = bank.kept(name, level)
            cuts[block][bank.kinds[name]] = Cut(tuple(kept), weight, kv_heads)
        return cuts

    @staticmethod
    def outside_params(adapter, sizes, fmt: str) -> int:
        """Parameters an export holds besides the searched ones: embeddings, final norm, LM head, the
        pre-norm of every present sublayer (levels count q/k/v/o and gate/up/down alone) and, in
        nemotron-nas, the zero o_proj biases of a model with q/k/v biases only."""
        from evopress.compress.structured import MLP, Attention

        geo = adapter.geometry()
        full = {"attn": Attention.of(geo).full, "mlp": MLP.of(geo).params(geo.intermediate_size)}
        sublayer = {kind: adapter.sublayer_params(kind) for kind in full}  # with its pre-norm
        other = sum(p.numel() for p in adapter.model.parameters()) - adapter.num_blocks * sum(sublayer.values())
        attention_extra = sublayer["attn"] - full["attn"]
        if fmt == "nemotron-nas" and geo.qkv_bias and not geo.o_bias:
            attention_extra += geo.hidden_size
        return other + sum(bool(heads) * attention_extra + bool(width) * (sublayer["mlp"] - full["mlp"])
                           for heads, _, width in sizes)


def level_heads(attn, params: int, kv_heads: int) -> int:
    """Query heads of an attention level, from its exact parameters and KV heads (`Attention.params`)."""
    return next(h for h in range(attn.heads + 1) if attn.params(h, kv_heads) == params)
