"""GGUF for llama.cpp: one tensor type per linear layer under an exact file-size budget.

The levels of a layer are llama.cpp's own tensor types (Q2_K ... Q8_0, F16), each made by
llama.cpp's own quantizer (`compress.ggml`, optionally with an importance matrix from our
calibration data) and stored as the GGUF blocks themselves, so what the search scores is what
llama.cpp computes with (its dot products also round the activations: see docs/gguf.md). A level
costs its exact bytes in the file, alignment padding included; the header, the norms, the token
embedding and the output tensor (at `--embed-type` / `--output-type`, not searched) are a fixed
part, so `--budget 2.5MB` is the file's size and `--target 4.5` its bits per parameter, as
llama.cpp reports them. The search, the stacked evaluator, DP and random baselines are the
quantization method's (`methods.quant`); llama.cpp's own mixes (Q4_K_M, Q3_K_M, ...) are
baselines too, read off files its quantizer writes from our f32 export.
"""

from __future__ import annotations

import math
from pathlib import Path

from evopress.config import doc, parse_bytes, section
from evopress.errors import ExportError, RecipeError
from evopress.methods.base import register
from evopress.methods.quant import Quant

DEFAULT_TYPES = ("q2_k", "q3_k", "q4_k", "q5_k", "q6_k", "q8_0")
MIXES = ("Q4_K_M", "Q3_K_M")


@section
class GgufConfig:
    """The database (GGUF types per linear layer) and the file-size target."""

    target: float = doc(4.5, "bits per parameter of the whole file (8 x file bytes / parameters, as llama.cpp "
                        "reports BPW); --budget gives the file size instead")
    levels: tuple[str, ...] = doc(DEFAULT_TYPES, "GGUF tensor types to choose from, e.g. q2_k,q3_k,q4_k,q5_k,q6_k,q8_0")
    embed_type: str = doc("q6_k", "type of the token embedding (not searched)")
    output_type: str = doc("q6_k", "type of the output (LM head) tensor (not searched)")
    imatrix: bool = doc(False, "quantize with an importance matrix from the calibration data (llama.cpp's "
                        "imatrix: the mean squared activation of each input column)")
    mixes: tuple[str, ...] = doc(MIXES, "llama.cpp's own mixes to compare against (baseline llama.cpp)")
    database: str = doc("", "variant store directory; shareable (default: RUN_DIR/database)", flag="--db")
    database_tokens: int = doc(0, "calibration tokens for the importance matrix (0 = --calibration-tokens)")


def uniform(method, run) -> dict | None:
    """Every layer at the largest type whose uniform profile fits the budget."""
    from evopress.compress.quant import uniform_genome

    fits = [(run.space.cost(g), t) for t in method.level_names
            if (g := uniform_genome(run.space, t)) is not None and run.space.cost(g) <= run.budget.high]
    if not fits:
        run.log("uniform: no uniform type fits the budget, skipped")
        return None
    level = max(fits)[1]
    return {"name": f"uniform {level}", "genome": uniform_genome(run.space, level)}


def llama_cpp(method, run) -> list[dict] | dict | None:
    """llama.cpp's own mixes (`--mixes`): its quantizer run on our f32 file chooses a type per
    tensor; the plan is those types over the searched layers (the file it wrote is kept beside)."""
    from evopress.compress.ggml import llama_mix
    from evopress.export.gguf import write_gguf
    from evopress.models.gguf_names import gguf_name

    out = run.dir.path / "llama.cpp"
    out.mkdir(parents=True, exist_ok=True)
    source = out / "model-f32.gguf"
    if not source.exists():
        run.bank.apply(None)
        write_gguf(run.session.adapter, run.session.tokenizer, source, dense_type="f32")
    plans = []
    for mix in method.options.mixes:
        path = out / f"model-{mix}.gguf"
        types = llama_mix(source, mix, path)
        genome = []
        for unit in run.space.units:
            t = types[gguf_name(f"{unit.name}.weight")]
            if t not in unit.levels:
                run.log(f"llama.cpp {mix}: {unit.name} is {t}, not among --levels {','.join(unit.levels)}; skipped")
                break
            genome.append(unit.levels.index(t))
        else:
            size = path.stat().st_size  # llama.cpp's own file (its embedding and output types, not ours)
            plans.append({"name": f"llama.cpp {mix}", "genome": tuple(genome), "file": str(path),
                          "file MB": size / 1e6, "file bpw": 8 * size / method.parameters})
    return plans


@register
class Gguf(Quant):
    name, section, Config = "gguf", "gguf", GgufConfig
    help = "EvoPress for llama.cpp: a GGUF tensor type per linear layer (Q2_K-Q8_0) under a file-size budget"
    exporters = ("gguf",)
    default_export = "gguf"
    default_baselines = ("uniform", "random", "dp", "llama.cpp")
    baselines = {"uniform": uniform, "llama.cpp": llama_cpp}

    @property
    def level_names(self) -> tuple[str, ...]:
        from evopress.compress.ggml import parse_type

        return tuple(parse_type(t) for t in self.options.levels)

    def check(self) -> None:
        from evopress.compress.ggml import parse_mix, parse_type

        if len(set(self.level_names)) < 2:
            raise RecipeError(f"--levels needs at least two GGUF types to choose between, got {list(self.options.levels)}")
        parse_type(self.options.embed_type), parse_type(self.options.output_type)
        for mix in self.options.mixes:
            parse_mix(mix)
        if not 0 < self.options.target <= 32:
            raise RecipeError(f"gguf target {self.options.target} must be bits per parameter in (0, 32], e.g. 4.5")

    def check_model(self, session) -> None:
        from evopress.compress.ggml import check_shape
        from evopress.database.build import matrices
        from evopress.export.gguf import header_size

        header_size(session.adapter, session.tokenizer)  # a model or tokenizer llama.cpp's llama cannot take: refused now

        for m in matrices(session.adapter):
            for t in self.level_names:
                check_shape(t, *m.shape, m.name)
        state = session.adapter.dense_state_dict()
        for key, t in self._fixed_types(session.adapter).items():
            check_shape(t, *state[key].shape, key)

    def _store_config(self, session) -> dict:
        return {"builder": "llama.cpp", "levels": list(self.level_names), "imatrix": self.options.imatrix,
                "calibration": session.protocol["calibration"], "tokens": int(self._tokens(session).numel())}

    def _size(self, name: str, rows: int, cols: int) -> int:
        from evopress.compress.ggml import tensor_bytes
        from evopress.export.gguf import padded

        return 8 * padded(tensor_bytes(name, rows, cols))

    _rank = None  # levels ordered by their bytes in the file
    store_hint = "a GGUF store holds one set of types: pass the --levels and --imatrix it was built with, or another --db"

    def fill(self, run, store) -> None:
        from evopress.database.build import build_store
        from evopress.database.gguf import gguf_block_levels

        s = run.session
        table = {u["name"]: u for u in store.units}
        build_store(s.adapter, self._tokens(s), store, gguf_block_levels(table, store.manifest["config"]),
                    f"llama.cpp {','.join(self.level_names)}", s.device, s.batch_size, run.log)

    def space(self, session):
        from evopress.export.gguf import gguf_tensors

        space = super().space(session)
        self.parameters = sum(math.prod(shape) for _, shape in gguf_tensors(session.adapter).values())
        return space

    def _fixed_types(self, adapter) -> dict[str, str]:
        """The type of every matrix the search does not choose (the embedding, the output)."""
        from evopress.compress.ggml import parse_type
        from evopress.export.gguf import gguf_tensors

        searched = {f"{m}.weight" for b in range(adapter.num_blocks) for m in
                    (adapter.linear_name(b, s) for s in adapter.linears(b))}
        return {key: parse_type(self.options.embed_type if name == "token_embd.weight" else self.options.output_type)
                for key, (name, shape) in gguf_tensors(adapter).items() if len(shape) == 2 and key not in searched}

    def _fixed_bytes(self, session) -> int:
        """The file's bytes besides the searched layers (header, f32 norms, embedding, output): the
        writer's own size with the searched layers at f32, less those."""
        from evopress.export.gguf import file_size, padded

        adapter = session.adapter
        f32 = sum(padded(4 * n) for n in self.numels)
        return file_size(adapter, session.tokenizer, self._fixed_types(adapter), dense_type="f32") - f32

    @property
    def bits(self) -> float:
        """Bits per searched weight that the file budget leaves after the fixed part."""
        file_bits = 8 * parse_bytes(self.cfg.budget) if self.cfg.budget else self.options.target * self.parameters
        return (file_bits - self.fixed_bits) / sum(self.numels)

    def budget(self, space):
        from evopress.compress.quant import bits_budget
        from evopress.errors import InfeasibleBudgetError

        try:
            return bits_budget(space, self.numels, self.bits)
        except InfeasibleBudgetError as e:
            size = f"--budget {self.cfg.budget}" if self.cfg.budget else f"--target {self.options.target:g}"
            raise InfeasibleBudgetError(f"{size} leaves {self.bits:.3f} bits per searched weight after the file's "
                                        f"fixed {self.fixed_bits / 8e6:.3f} MB (header, norms, embedding at "
                                        f"{self.options.embed_type}, output at {self.options.output_type}): {e}") from None

    def bank(self, run):
        from evopress.database.gguf import GgufBank

        bank = GgufBank(run.session.adapter, self.store(run.session))
        run.log(f"variants: {sum(len(v) for v in bank.variants.values())} levels of {len(run.space)} layers "
                f"({bank.nbytes() / 2**20:.1f} MiB resident as GGUF blocks)")
        return bank

    def describe_target(self) -> str:
        size = f"--budget {self.cfg.budget}" if self.cfg.budget else f"{self.options.target:g} bits per parameter"
        return (f"a {size} file: {self.bits:.4g} bits per weight over {sum(self.numels):,} weights in "
                f"{len(self.numels)} layers after {self.fixed_bits / 8e6:.3f} MB fixed, types {', '.join(self.level_names)}")

    def measures(self, space, genome) -> dict:
        total = (space.cost(genome) + self.fixed_bits) / 8
        return {"bits/weight": space.cost(genome) / sum(self.numels), "file MB": total / 1e6,
                "file bpw": 8 * total / self.parameters}

    def export(self, run, genome, out: Path, fmt: str) -> dict:
        from evopress.compress.ggml import quantize
        from evopress.export.gguf import GGUFTensor, write_gguf

        adapter, bank = run.session.adapter, run.bank
        bank.apply(None)
        tensors = {f"{name}.weight": GGUFTensor(bank.type_of(name, g), bank.data(name, g))
                   for name, g in zip(bank.names, genome)}
        state = adapter.dense_state_dict()
        for key, t in self._fixed_types(adapter).items():
            tensors[key] = GGUFTensor(t, quantize(state[key].float().cpu().numpy(), t))
        info = write_gguf(adapter, run.session.tokenizer, out / "model.gguf", tensors=tensors)
        searched = run.space.cost(genome) / 8 + self.fixed_bits / 8
        if info["file_bytes"] != searched:
            raise ExportError(f"the GGUF file holds {info['file_bytes']:,} bytes, but the search counted "
                              f"{searched:,.0f}; this is a bug, please report it")
        run.log(f"gguf export: {info['file_bytes'] / 1e6:.3f} MB, exactly the searched size")
        return {"gguf": "model.gguf", "file_bytes": info["file_bytes"], "bytes_on_disk": info["file_bytes"],
                "loaders": ["llama.cpp"]}

