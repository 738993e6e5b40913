"""W5 (BENCHMARKS.md): GPTQ quantization database and EvoPress bit-width search on the bench model.

    python bench/w5_quant.py [--model DIR] [--generations 12] [--out runs/w5] [--compile] [--skip-build]

Database: GPTQ, group 128, levels int2-6 and int8 plus MXFP4 and NVFP4 (and bf16, which stores
nothing), from 2^20 calibration tokens (sequences of 1024); figures: build seconds, block-work
seconds, store bytes against a dense bf16 copy per level, peak GPU memory. Search: 3.0 bits per
weight, 128 offspring, stages 16@2048, 4@16384, 1@131072, KL; figures: seconds per generation
(median of generations 3+), final KL and held-out perplexity of EvoPress and the baselines.
One JSON line per figure; `bench/floor.py --workload W5` in the same device call gives the floor.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from record import RESULTS, Figures, append, block_seconds

LEVELS = ("int2", "int3", "int4", "int5", "int6", "int8", "mxfp4", "nvfp4", "bf16")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="", help="HF model dir; default: train the zoo bench preset")
    p.add_argument("--generations", type=int, default=12)
    p.add_argument("--out", default="runs/w5")
    p.add_argument("--results", default=str(RESULTS), help="append the figures here ('' = do not)")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--skip-build", action="store_true")
    p.add_argument("--train-tokens", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--stack-tokens", type=int, default=1 << 18)
    p.add_argument("--baselines", default="uniform,dp,role", help="comma list ('' = none)")
    a = p.parse_args()

    import torch

    from evopress.api import run as quantize
    from evopress.config import BaselineConfig, DataConfig, RunConfig, SearchConfig
    from evopress.methods.quant import QuantConfig

    figure = figures = Figures()

    model = a.model
    if not model:
        from evopress.zoo import train
        from evopress.zoo.presets import get_preset

        t0 = time.perf_counter()
        preset = get_preset("bench")
        if a.train_tokens:
            preset = preset.replace(train_tokens=a.train_tokens)
        model = str(train(preset, Path(a.out) / "bench-model"))
        figure("zoo bench train seconds", round(time.perf_counter() - t0, 1))
    cfg = RunConfig(method="quant", model=model, device="cuda", dtype="bfloat16",
                    run_dir=str(Path(a.out) / ("search-compile" if a.compile else "search")),
                    data=DataConfig(calibration="builtin+site-packages", seq_len=1024, calibration_tokens=2**20,
                                    heldout_tokens=262_144),
                    batch_size=a.batch_size,
                    options=QuantConfig(target=3.0, levels=LEVELS, database=str(Path(a.out) / "db")),
                    baselines=BaselineConfig(names=tuple(b for b in a.baselines.split(",") if b)),
                    search=SearchConfig(generations=a.generations, offspring=128,
                                        stages=((16, 2048), (4, 16384), (1, 131072)), compile=a.compile,
                                        stack_tokens=a.stack_tokens))
    if not a.skip_build:
        lines = []
        torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        run = quantize(cfg, log=lines.append, steps=("db",))
        figure("W5 build seconds (incl. model load and calibration data)", round(time.perf_counter() - t0, 1))
        figure("W5 block-work seconds (sum over blocks)", round(block_seconds(lines), 1))
        figure("W5 peak GPU memory GiB (build)", round(torch.cuda.max_memory_allocated() / 2**30, 2))
        from evopress.database.store import VariantStore

        store = VariantStore.open(Path(a.out) / "db")
        weights = sum(u["shape"][0] * u["shape"][1] for u in store.units)
        figure("W5 store GB", round(store.nbytes() / 1e9, 4))
        figure("W5 store / dense bf16 copy per stored level",
               round(store.nbytes() / (2 * weights * (len(LEVELS) - 1)), 4))
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    lines = []
    run = quantize(cfg, log=lines.append, steps=("search", "eval"))
    figure("W5 search+eval seconds", round(time.perf_counter() - t0, 1))
    steady = [h["seconds"] for h in run.history[2:]] or [h["seconds"] for h in run.history]
    figure("W5 s/generation (median, gens 3+)", round(statistics.median(steady), 3))
    figure("W5 seconds of each generation", [round(h["seconds"], 3) for h in run.history])
    figure("W5 peak GPU memory GiB (search)", round(torch.cuda.max_memory_allocated() / 2**30, 2))
    for name, plan in run.plans.items():
        figure(f"W5 {name}: bits/weight, calibration KL, held-out ppl",
               [round(plan["bits/weight"], 4), round(plan["kl"], 5), round(plan.get("ppl", 0), 3)])
    figure("W5 dense held-out ppl", run.dense_ppl)
    figure("compile", a.compile)
    figure("device", torch.cuda.get_device_name())
    if a.results:
        append("W5 quantization database and search", " ".join(["python"] + sys.argv), figures, a.results)


if __name__ == "__main__":
    main()
