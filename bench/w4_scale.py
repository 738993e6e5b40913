"""W4 (BENCHMARKS.md): the depth (a) and sparsity (b) searches on a Llama-3-8B-shaped model.

    python bench/w4_scale.py [--workload a|b|q] [--generations 6] [--out runs/w4] [--small] [--compile]

Writes a model directory with the Llama-3-8B shape (hidden 4096, 32 layers, 32 heads / 8 KV
heads, MLP 14336, vocab 128256) and random bf16 weights (nothing is downloaded; the tokenizer
is the built-in tiny model's, whose ids all lie inside the vocabulary), then runs W1's settings:
drop 8+8 of 32+32 sublayers, KL on 131,072 calibration tokens of 1024, 64 initial candidates on
2,048 tokens, 32 offspring, stages 2@2048 then 1@32768. Prints seconds per generation, the FLOP
floor per generation (candidate tokens x 2 x parameters / 790 TFLOP/s) and their ratio.

W4b: a SparseGPT database of every q,k,v,o,gate,up,down projection (build seconds, store bytes,
peak GPU memory), then W3's search: 50% average sparsity, 64 offspring, stages 8@2048,
2@16384, 1@65536, full-vocabulary KL (seconds per generation against the FLOP floor). The
calibration set is W4a's 131,072 tokens for both (the teacher's full-vocabulary log-probs of
2^20 tokens would take 269 GB), and the grid is 0.4-0.6 in steps of 0.05 (0.025 for matrices
under half the largest): every level stays resident on the GPU next to the model.
W5 at the 8B shape (`--workload q`): W5's GPTQ database (group 128, levels int2-6, int8, MXFP4,
NVFP4 and bf16, 2^20 calibration tokens; build seconds, store bytes, peak GPU memory), then W5's
search at 3.0 bits per weight (128 offspring, stages 16@2048, 4@16384, 1@131072, full-vocabulary
KL on 131,072 tokens for the same reason as W4b); every level stays resident as packed codes.
`--db-tokens 1048576 --build-only` builds W5's database from 2^20 tokens instead (its own directory).
`--small` shrinks the shape for a CPU smoke test. `--build-only` stops after the W4b (W5) database, and
`--skip-build` reuses the model directory and (W4b) the database already under `--out`, so the
build and the search can run as two commands.
Write the output straight to a file: a pipe may hold the last figures back if the run is stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

from record import RESULTS, append

PEAK_FLOPS = 790e12  # H200 dense bf16, as in BENCHMARKS.md


def make_model(out: Path, small: bool, device: str, layers: int = 0) -> int:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from evopress.session import resolve_model

    shape = dict(hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                 intermediate_size=14336, vocab_size=128256)
    if small:
        shape = dict(hidden_size=128, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                     intermediate_size=256, vocab_size=128256)
    if layers:
        shape["num_hidden_layers"] = layers
    config = LlamaConfig(**shape, max_position_embeddings=8192, rope_theta=500000.0, tie_word_embeddings=False)
    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM(config).to(torch.bfloat16)
    params = sum(p.numel() for p in model.parameters())
    model.save_pretrained(out)
    tiny = Path(resolve_model("zoo:tiny"))
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny / name, out / name)
    del model
    return params


def model_params(path: Path) -> int:
    """Parameters of an existing model directory, counted without loading its weights."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(path))
    return sum(p.numel() for p in model.parameters())


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--workload", choices=("a", "b", "q"), default="a")
    p.add_argument("--generations", type=int, default=6)
    p.add_argument("--out", default="runs/w4")
    p.add_argument("--small", action="store_true")
    p.add_argument("--skip-build", action="store_true", help="reuse the model (and W4b database) under --out")
    p.add_argument("--build-only", action="store_true", help="W4b, q: the model and database, not the search")
    p.add_argument("--compile", action="store_true", help="the search's KL and the work between matmuls through torch.compile")
    p.add_argument("--db-tokens", type=int, default=0,
                   help="q with --build-only: build from this many calibration tokens (e.g. 1048576, W5's 2^20; "
                        "the search needs a database of its own 131,072)")
    p.add_argument("--layers", type=int, default=0, help="fewer blocks of the same shape (a per-block figure)")
    p.add_argument("--device", default="cuda")
    p.add_argument("--results", default=str(RESULTS), help="append the figures here ('' = do not)")
    a = p.parse_args()

    # W4b holds the model, the teacher, every level and stacked activations at once: let freed
    # blocks of any size be reused (set before torch touches the GPU).
    os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
    import torch

    figures = {}

    def figure(name, value):
        figures[name] = value
        print(json.dumps({"figure": name, "value": value}), flush=True)

    out = Path(a.out)
    t0 = time.perf_counter()
    params = model_params(out / "model") if a.skip_build else make_model(out / "model", a.small, a.device, a.layers)
    figure("W4 model parameters", params)
    if not a.skip_build:
        figure("W4 model build + save seconds", round(time.perf_counter() - t0, 1))
    if a.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    {"a": w4a, "b": w4b, "q": w5q}[a.workload](a, out, params, figure)
    if a.device == "cuda":
        figure("device", torch.cuda.get_device_name())
    if a.results:
        title = {"a": "W4a depth search at 8B scale", "b": "W4b sparsity at 8B scale",
                 "q": "W5 quantization at 8B scale"}[a.workload]
        append(title, " ".join(["python"] + sys.argv), figures, a.results)


def w4a(a, out: Path, params: int, figure) -> None:
    import torch

    from evopress.api import run as drop
    from evopress.config import BaselineConfig, DataConfig, RunConfig, SearchConfig
    from evopress.methods.depth import DropConfig

    tokens = 16_384 if a.small else 131_072
    stages = ((2, 1024), (1, 4096)) if a.small else ((2, 2048), (1, 32768))
    cfg = RunConfig(model=str(out / "model"), device=a.device, dtype="bfloat16", run_dir=str(out / "search"),
                    export_format="none", batch_size=32,
                    data=DataConfig(calibration="builtin", seq_len=1024 if not a.small else 256,
                                    calibration_tokens=tokens, heldout_tokens=8_192),
                    options=DropConfig(target=0.25, granularity="sublayer"),
                    search=SearchConfig(generations=a.generations, offspring=32, stages=stages,
                                        initial=64, initial_tokens=stages[0][1], compile=a.compile),
                    baselines=BaselineConfig(names=()))
    t0 = time.perf_counter()
    run = drop(cfg, log=lambda s: print(s, flush=True) if not s.startswith("gen") else None)
    figure("W4a whole run seconds", round(time.perf_counter() - t0, 1))
    _per_generation("W4a", [h for h in run.history if h["phase"] == "evolve"], params, figure)
    if a.device == "cuda":
        figure("W4a peak GPU memory GiB", round(torch.cuda.max_memory_allocated() / 2**30, 1))


def w4b(a, out: Path, params: int, figure) -> None:
    import torch

    from evopress.api import run as sparsify
    from evopress.config import BaselineConfig, DataConfig, RunConfig, SearchConfig
    from evopress.methods.sparsity import SparsityConfig

    tokens = 16_384 if a.small else 131_072
    stages = ((8, 512), (2, 2048), (1, 4096)) if a.small else ((8, 2048), (2, 16384), (1, 65536))
    cfg = RunConfig(method="sparsify", model=str(out / "model"), device=a.device, dtype="bfloat16",
                    run_dir=str(out / "sparse"), batch_size=32,
                    data=DataConfig(calibration="builtin", seq_len=1024 if not a.small else 256,
                                    calibration_tokens=tokens, heldout_tokens=8_192),
                    options=SparsityConfig(target=0.5, database=str(out / "db"), grid=(0.4, 0.6, 0.05),
                                           small_step=0.025),
                    baselines=BaselineConfig(names=("uniform",)),
                    search=SearchConfig(generations=a.generations, offspring=64, stages=stages,
                                        stack_tokens=1 << 17, compile=a.compile))
    show = lambda s: print(s, flush=True) if not s.startswith("gen") else None  # noqa: E731
    if not a.skip_build:
        t0 = time.perf_counter()
        sparsify(cfg, log=show, steps=("db",))
        figure("W4b database build seconds (incl. model load and calibration data)", round(time.perf_counter() - t0, 1))
        figure("W4b store GB", round(sum(f.stat().st_size for f in (out / "db").iterdir()) / 1e9, 2))
        if a.device == "cuda":
            figure("W4b build peak GPU memory GiB", round(torch.cuda.max_memory_allocated() / 2**30, 1))
            torch.cuda.reset_peak_memory_stats()
        if a.build_only:
            return
    t0 = time.perf_counter()
    run = sparsify(cfg, log=show, steps=("search",))
    figure("W4b search seconds (bank load, teacher, EvoPress, uniform)", round(time.perf_counter() - t0, 1))
    _per_generation("W4b", run.history, params, figure)
    figure("W4b EvoPress / uniform calibration KL", [round(run.plans[k]["kl"], 5) for k in ("EvoPress", "uniform")])
    if a.device == "cuda":
        figure("W4b search peak GPU memory GiB", round(torch.cuda.max_memory_allocated() / 2**30, 1))


def w5q(a, out: Path, params: int, figure) -> None:
    import re

    import torch

    from evopress.api import run as quantize
    from evopress.config import BaselineConfig, DataConfig, RunConfig, SearchConfig
    from evopress.database.store import VariantStore
    from evopress.methods.quant import QuantConfig

    levels = ("int2", "int3", "int4", "int5", "int6", "int8", "mxfp4", "nvfp4", "bf16")
    tokens = 16_384 if a.small else 131_072
    if a.db_tokens:
        if not a.build_only:
            raise SystemExit("--db-tokens is for --build-only: the search's teacher covers the whole calibration set")
        tokens = a.db_tokens
    # the last stage scores every predicted token: 128 rows of 1024 predict 128 x 1023
    stages = ((8, 512), (2, 2048), (1, 4096)) if a.small else ((16, 2048), (4, 16384), (1, 128 * 1023))
    cfg = RunConfig(method="quant", model=str(out / "model"), device=a.device, dtype="bfloat16",
                    run_dir=str(out / "quant"), export_format="none", batch_size=32,
                    data=DataConfig(calibration="builtin+site-packages", seq_len=1024 if not a.small else 256,
                                    calibration_tokens=tokens, heldout_tokens=8_192),
                    options=QuantConfig(target=3.0, levels=levels,
                                        database=str(out / (f"qdb-{tokens}" if a.db_tokens else "qdb"))),
                    baselines=BaselineConfig(names=("uniform",)),
                    search=SearchConfig(generations=a.generations, offspring=128 if not a.small else 16,
                                        stages=stages, stack_tokens=1 << 17, compile=a.compile))
    lines: list[str] = []

    def show(s):
        lines.append(s)
        print(s, flush=True)
    if not a.skip_build:
        t0 = time.perf_counter()
        quantize(cfg, log=show, steps=("db",))
        figure("W5 8B database build seconds (incl. model load and calibration data)", round(time.perf_counter() - t0, 1))
        blocks = [float(m.group(1)) for x in lines for m in [re.search(r"block \d+/\d+ in ([0-9.]+)s", x)] if m]
        figure("W5 8B block-work seconds (sum over blocks)", round(sum(blocks), 1))
        store = VariantStore.open(cfg.options.database)
        weights = sum(u["shape"][0] * u["shape"][1] for u in store.units)
        figure("W5 8B store GB", round(store.nbytes() / 1e9, 2))
        figure("W5 8B store / dense bf16 copy per stored level", round(store.nbytes() / (2 * weights * (len(levels) - 1)), 4))
        if a.device == "cuda":
            figure("W5 8B build peak GPU memory GiB", round(torch.cuda.max_memory_allocated() / 2**30, 1))
            torch.cuda.reset_peak_memory_stats()
        if a.build_only:
            return
    t0 = time.perf_counter()
    run = quantize(cfg, log=show, steps=("search",))
    figure("W5 8B search seconds (bank load, teacher, EvoPress, uniform)", round(time.perf_counter() - t0, 1))
    _per_generation("W5 8B", run.history, params, figure)
    for name, plan in run.plans.items():
        figure(f"W5 8B {name}: bits/weight, calibration KL", [round(plan["bits/weight"], 4), round(plan["kl"], 5)])
    if a.device == "cuda":
        figure("W5 8B search peak GPU memory GiB", round(torch.cuda.max_memory_allocated() / 2**30, 1))


def _per_generation(tag: str, history: list[dict], params: int, figure) -> None:
    """Median seconds per generation after the first two, against the FLOP floor of its candidate tokens."""
    steady = history[2:] or history
    per_gen = statistics.median(h["seconds"] for h in steady)
    floor = statistics.median(h["tokens"] for h in steady) * 2 * params / PEAK_FLOPS
    figure(f"{tag} s/generation (median, gens 3+)", round(per_gen, 3))
    figure(f"{tag} FLOP floor s/generation", round(floor, 3))
    figure(f"{tag} ratio to the FLOP floor", round(per_gen / floor, 2))
    figure(f"{tag} candidate tokens/s (median)", round(statistics.median(h["tokens_per_s"] for h in steady)))


if __name__ == "__main__":
    main()
