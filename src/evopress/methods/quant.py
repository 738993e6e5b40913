"""Quantization: one format per linear layer under an exact budget in bits (EvoPress §2.1-2.3, §3.2).

The database holds every level of every linear layer (GPTQ or round-to-nearest, every level of a
layer from one Hessian in one sweep; packed codes and params, `evopress.database.quant`), one
store serving every target. A level costs its exact bits, scales and zeros included, so
`--target 3.25` means 3.25 bits per quantized weight on disk; embeddings and the LM head stay
bf16 and are counted in the total size the table shows. The candidates run stacked
(`evopress.eval.stacked`). Baselines on the same database: uniform (integer targets), the
reference's best-of-N random draw, DP over per-layer errors, and a llama.cpp-style role mix.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Literal


from evopress.compress.quant import (DEFAULT_LEVELS, bits_budget, bits_per_weight, parse_levels, quant_space,
                                     role_genome, uniform_genome, unit_table)
from evopress.config import doc, parse_bytes, section
from evopress.errors import DatabaseError, ExportError, InfeasibleBudgetError, RecipeError
from evopress.methods.base import StoreMethod, register


@section
class QuantConfig:
    """The database (levels per linear layer) and the target."""

    target: float = doc(3.0, "bits per quantized weight, scales and zeros included (e.g. 2.5, 3.25, 4)")
    levels: tuple[str, ...] = doc((), "formats to choose from, e.g. int2,int3,int4,int8,bf16 (default: what "
                                  "the export format carries)")
    database: str = doc("", "variant store directory; shareable (default: RUN_DIR/database)", flag="--db")
    builder: Literal["gptq", "rtn"] = doc("gptq", "how each level is made (rtn: round to nearest)")
    group_size: int = doc(128, "input columns per integer scale")
    symmetric: bool = doc(False, "integer levels without zero points")
    database_tokens: int = doc(0, "calibration tokens for the database (0 = --calibration-tokens)")
    act_order: bool = doc(False, "GPTQ rounds the input columns by decreasing Hessian diagonal (static groups)")
    propagate: str = doc("dense", "what later blocks see while the database is built: dense (default; a layer's "
                         "levels do not depend on the others') or a level, e.g. int3 (the reference's way)")
    blocksize: int = doc(128, "GPTQ column block size")
    damp: float = doc(0.01, "Hessian dampening, as a fraction of its mean diagonal")


def role_mix(method, run) -> dict | None:
    """llama.cpp-style: more bits to v_proj and down_proj and to the first and last block."""
    base = f"int{int(method.bits)}"
    kinds = [name.rsplit(".", 1)[-1] for name in method.names]
    genome = role_genome(run.space, run.budget, kinds, method.blocks, base)
    if genome is None:
        run.log(f"role mix: no {base}-based mix fits the budget, skipped")
        return None
    return {"name": f"role mix ({base}, v/down +1)", "genome": genome}


def uniform(method, run) -> dict | None:
    """Every layer at the integer level of the target, even where its scales put it over the budget;
    under a byte budget, the widest integer level that fits it."""
    target = method.bits
    if method.cfg.budget:
        fits = [lv for lv in method.level_names if lv.startswith("int") and "+" not in lv and
                (g := uniform_genome(run.space, lv)) is not None and run.space.cost(g) <= run.budget.high]
        level = max(fits, key=lambda lv: int(lv[3:]), default="none")
    else:
        level = f"int{round(target)}"
    genome = uniform_genome(run.space, level) if method.cfg.budget or abs(target - round(target)) < 1e-9 else None
    if genome is None:
        run.log(f"uniform: no uniform level at {target} bits per weight, skipped")
        return None
    return {"name": f"uniform {level}", "genome": genome}


@register
class Quant(StoreMethod):
    name, section, Config = "quant", "quant", QuantConfig
    help = "EvoPress quantization: a format per linear layer (int2-8, FP4, FP8, bf16) under a bit budget"
    exporters = ("gptq", "compressed-tensors", "hf")
    default_baselines = ("uniform", "random", "dp", "role")
    baselines = {"uniform": uniform, "role": role_mix}
    cost_unit = "bits"
    start_from = "random"
    byte_budget = True

    @property
    def level_names(self) -> tuple[str, ...]:
        if self.options.levels:
            return parse_levels(self.options.levels)
        return DEFAULT_LEVELS.get(self.cfg.export_format, DEFAULT_LEVELS["hf"])

    def resolved(self):
        """The level set made explicit: it follows `--export` when not given, and every process of a
        torchrun search (which export nothing) and a later `evopress export` in another format must
        read the genome over the same levels."""
        from evopress.config import replace

        cfg = super().resolved()
        return replace(cfg, options=replace(cfg.options, levels=self.level_names))

    def check(self) -> None:
        formats = [self._format(n) for n in self.level_names]
        if not 0 < self.options.target <= 16:
            raise RecipeError(f"quant target {self.options.target} must be bits per weight in (0, 16], e.g. 3.25")
        if self.cfg.budget and self.cfg.export_format == "hf":
            raise RecipeError("--budget counts the bytes of a quantized checkpoint, and --export hf writes "
                              "dequantized weights (no size saved): use --export gptq or compressed-tensors "
                              "(or none), or give --target in bits per weight")
        if self.options.propagate not in ("dense", *self.level_names):
            raise RecipeError(f"--propagate {self.options.propagate!r} must be dense or one of the levels "
                              f"({', '.join(self.level_names)})")
        carried = DEFAULT_LEVELS.get(self.cfg.export_format)
        if carried is not None and self.cfg.export_format != "hf":
            extra = [f.name for f in formats if f.name not in carried]
            if extra:
                raise RecipeError(f"--export {self.cfg.export_format} cannot carry {', '.join(extra)}; "
                                  f"choose --levels among {', '.join(carried)}")

    def check_model(self, session) -> None:
        from evopress.compress.formats import check_shape
        from evopress.database.build import matrices

        for m in matrices(session.adapter):
            for n in self.level_names:
                check_shape(self._format(n), *m.shape, m.name)

    def _store_config(self, session) -> dict:
        s = self.options
        return {"builder": s.builder, "levels": list(self.level_names), "group": s.group_size, "symmetric": s.symmetric,
                "blocksize": s.blocksize, "damp": s.damp, "act_order": s.act_order, "propagate": s.propagate, "calibration": session.protocol["calibration"],
                "tokens": int(self._tokens(session).numel()), "dtype": session.protocol["dtype"]}

    def _size(self, name: str, rows: int, cols: int) -> int:
        """A level's exact bits: as the export layout stores it (GPTQ adds g_idx, compressed-tensors
        its own scale dtypes), or as `Format.size` counts it for hf and none."""
        fmt = self._format(name)
        layout = checkpoint(self.cfg.export_format)
        return 8 * layout[0](fmt, rows, cols) if layout else fmt.size(rows, cols)

    def _rank(self, name: str, rows: int, cols: int) -> int:
        """The level order of a store: by the layout-free size, whatever layout costs are counted in."""
        return self._format(name).size(rows, cols)

    store_hint = ("a quantization store holds one set of levels: pass the --levels, --group-size, --symmetric, "
                  "--act-order and --propagate it was built with")

    def _fixed_bytes(self, session) -> int:
        """Bytes of the checkpoint besides the searched layers."""
        return rest_bytes(session.adapter, self.names)

    def _format(self, name: str):
        from evopress.compress.formats import parse_format

        return parse_format(name, self.options.group_size, self.options.symmetric)

    def store(self, session):
        from evopress.database.build import matrices
        from evopress.database.store import VariantStore

        if not hasattr(self, "_store"):
            table = unit_table(matrices(session.adapter), list(self.level_names), self._size, rank=self._rank)
            units = [{k: u[k] for k in ("name", "block", "shape", "levels")} for u in table]
            try:
                self._store = VariantStore.create_or_open(self.database_dir(), session.fingerprint,
                                                          self._store_config(session), units)
            except DatabaseError as e:
                raise DatabaseError(f"{e} ({self.store_hint})") from None
            self._table = table
        return self._store

    def fill(self, run, store) -> None:
        from evopress.database.build import build_store
        from evopress.database.quant import quant_block_levels, quant_propagation

        s = run.session
        table, config = {u["name"]: u for u in store.units}, store.manifest["config"]
        build_store(s.adapter, self._tokens(s), store, quant_block_levels(table, config),
                    f"{self.options.builder} {','.join(self.level_names)}", s.device, s.batch_size, run.log,
                    quant_propagation(table, config))

    def space(self, session):
        store = self.store(session)
        store.require_complete()
        self.names = [u["name"] for u in self._table]
        self.blocks = [u["block"] for u in self._table]
        self.numels = [u["shape"][0] * u["shape"][1] for u in self._table]
        self.fixed_bits = 8 * self._fixed_bytes(session)
        return quant_space(self._table)

    @property
    def bits(self) -> float:
        """The target in bits per quantized weight: --target, or what --budget leaves after the rest."""
        if not self.cfg.budget:
            return self.options.target
        return (8 * parse_bytes(self.cfg.budget) - self.fixed_bits) / sum(self.numels)

    def budget(self, space):
        try:
            return bits_budget(space, self.numels, self.bits)
        except InfeasibleBudgetError as e:
            if not self.cfg.budget:
                raise
            raise InfeasibleBudgetError(f"--budget {self.cfg.budget} leaves {self.bits:.3f} bits per quantized weight "
                                        f"after the other tensors' {self.fixed_bits / 8e6:.3f} MB (bf16): {e}") from None

    def bank(self, run):
        from evopress.database.quant import QuantBank

        t0 = time.perf_counter()
        bank = QuantBank(run.session.adapter, self.store(run.session))
        run.log(f"variants: {sum(len(v) for v in bank.variants.values())} levels of {len(run.space)} layers "
                f"loaded in {time.perf_counter() - t0:.1f}s ({bank.nbytes() / 2**30:.3f} GiB resident, packed)")
        return bank

    def uniform(self, run):
        return None  # the search starts from the reference's random draws (`QuantBudget.random_genome`)

    def errors(self, run):
        errors = self.store(run.session).errors()
        return [errors[name] for name in self.names]

    def describe_target(self) -> str:
        size = f" (--budget {self.cfg.budget} with the rest)" if self.cfg.budget else ""
        return (f"{self.bits:.4g} bits per weight{size} over {sum(self.numels):,} weights in {len(self.numels)} "
                f"layers, levels {', '.join(self.level_names)}")

    def progress(self, space, cost: float) -> str:
        return f"{cost / sum(self.numels):.4f} bits/weight"

    def measures(self, space, genome) -> dict:
        total = (space.cost(genome) + self.fixed_bits) / 8
        return {"bits/weight": bits_per_weight(space, genome, self.numels), "model MB": total / 1e6}

    def profile_plot(self, run, plans: dict, path: Path) -> list[str]:
        from evopress.report import block_plot, kind_plot

        def per_unit(p):
            return [run.space.units[i].costs[g] / n for i, (g, n) in enumerate(zip(p["genome"], self.numels))]
        block_plot({name: (self.blocks, per_unit(p), self.numels) for name, p in plans.items()}, path,
                   f"Bits per weight per block (target {self.bits:.4g})", "bits per weight", 1.0)
        kinds = [name.rsplit(".", 1)[-1] for name in self.names]
        kinds_path = path.with_name(path.stem + "_kinds" + path.suffix)
        kind_plot({name: (kinds, per_unit(p), self.numels) for name, p in plans.items()}, kinds_path,
                  "Bits per weight per projection")
        return [kinds_path.name]

    def export(self, run, genome, out: Path, fmt: str) -> dict:
        from evopress.compress.depth import DropPlan
        from evopress.export import export
        from evopress.export.directory import bytes_on_disk, tensor_bytes

        adapter, bank = run.session.adapter, run.bank
        if fmt == "hf":
            bank.apply(genome)  # the fake-quantized weights, dequantized to the model's dtype
            report = export(adapter, DropPlan.dense(adapter.num_blocks), run.session.tokenizer, out, overwrite=True)
            return {"bytes_on_disk": report.bytes_on_disk, "weight_bytes": tensor_bytes(out),
                    "note": "dequantized weights in the model's dtype (for evaluation; no size saved)"}
        bank.apply(None)  # every tensor that is not a quantized level comes from the dense model
        levels = {name: bank.level(name, g) for name, g in zip(bank.names, genome)}
        info = checkpoint(fmt)[1](adapter, levels, run.session.tokenizer, out, overwrite=True)
        quantized = sum(v for k, v in info["bytes_by_kind"].items() if k != "other")
        if 8 * quantized != run.space.cost(genome):
            raise ExportError(f"the {fmt} export holds {quantized:,} bytes of linear layers, but the search counted "
                              f"{run.space.cost(genome) / 8:,.0f}; this is a bug, please report it")
        if info["weight_bytes"] != quantized + self.fixed_bits // 8:
            raise ExportError(f"the {fmt} export holds {info['weight_bytes']:,} bytes of tensors, but the search "
                              f"counted {quantized + self.fixed_bits // 8:,}; this is a bug, please report it")
        run.log(f"{fmt} export: {quantized / 1e6:.3f} MB of linear layers, exactly the searched cost, "
                f"{info['weight_bytes'] / 1e6:.3f} MB of tensors in all")
        if fmt == "gptq" and _fused_mixed(self.names, genome):
            run.log("note: q/k/v (or gate/up) of a block have different levels; vLLM runs them as one layer and "
                    "needs them equal (GPTQModel loads this export as it is)")
        return {"bytes_on_disk": bytes_on_disk(out), "weight_bytes": info["weight_bytes"],
                "bytes_by_kind": dict(info["bytes_by_kind"]), "quantized_bytes": quantized}


def rest_bytes(adapter, linear_names: list[str]) -> int:
    """Bytes of every tensor a checkpoint export writes besides the quantized layers: each once
    (tied embeddings too), floating ones in bf16, as the exporters write them."""
    from evopress.export.shards import untie

    skip = {f"{name}.weight" for name in linear_names}
    return sum(t.numel() * (2 if t.is_floating_point() else t.element_size())
               for key, t in untie(adapter.dense_state_dict()).items() if key not in skip)


def checkpoint(fmt: str):
    """(bytes of one layer at a level, the exporter) of a quantized checkpoint format, or None."""
    if fmt == "gptq":
        from evopress.export.gptq import export_gptq, gptq_layer_bytes
        return gptq_layer_bytes, export_gptq
    if fmt == "compressed-tensors":
        from evopress.export.compressed import ct_layer_bytes, export_compressed
        return ct_layer_bytes, export_compressed
    return None


def _fused_mixed(names: list[str], genome) -> bool:
    """Whether some block's q/k/v or gate/up projections differ in level."""
    groups: dict[tuple, set] = {}
    for name, g in zip(names, genome):
        prefix, short = name.rsplit(".", 1)
        fused = "qkv" if short in ("q_proj", "k_proj", "v_proj") else "gate_up" if short in ("gate_proj", "up_proj") else None
        if fused:
            groups.setdefault((prefix, fused), set()).add(g)
    return any(len(levels) > 1 for levels in groups.values())
