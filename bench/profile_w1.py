"""Where W1's time goes: seconds per generation against rows per forward, and a CUDA op profile.

    python bench/profile_w1.py [--model DIR] [--batch-sizes 8,32] [--generations 6]

Runs the W1 depth search (BENCHMARKS.md) for a few generations at each batch size, prints one
JSON line per figure, then profiles two generations at the last batch size and prints the
operators that take the most device time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path


def w1_config(model: str, run_dir: Path, generations: int, batch_size: int):
    from evopress.config import BaselineConfig, DataConfig, RunConfig, SearchConfig
    from evopress.methods.depth import DropConfig

    return RunConfig(model=model, device="cuda", dtype="bfloat16", run_dir=str(run_dir), export_format="none",
                     batch_size=batch_size,
                     data=DataConfig(calibration="builtin+site-packages", seq_len=1024, calibration_tokens=131_072,
                                     heldout_tokens=16_384),
                     options=DropConfig(target=4, granularity="sublayer"),
                     search=SearchConfig(generations=generations, offspring=32, stages=((2, 2048), (1, 32768)),
                                         initial=64, initial_tokens=2048),
                     baselines=BaselineConfig(names=()))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="")
    p.add_argument("--batch-sizes", default="8,32")
    p.add_argument("--generations", type=int, default=6)
    p.add_argument("--out", default="runs/profile-w1")
    a = p.parse_args()


    from evopress.api import run as drop

    model = a.model
    if not model:
        from evopress.zoo import train
        model = str(train("bench", Path(a.out) / "bench-model"))
    for bs in (int(x) for x in a.batch_sizes.split(",")):
        t0 = time.perf_counter()
        run = drop(w1_config(model, Path(a.out) / f"bs{bs}", a.generations, bs), log=lambda s: None)
        evolve = [h for h in run.history if h["phase"] == "evolve"]
        print(json.dumps({"batch_size": bs, "s/generation": statistics.median(h["seconds"] for h in evolve[2:]),
                          "tokens/s": statistics.median(h["tokens_per_s"] for h in evolve),
                          "final KL": run.best["fitness"], "run seconds": time.perf_counter() - t0}), flush=True)
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        drop(w1_config(model, Path(a.out) / "profiled", 2, bs), log=lambda s: None)
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=25))
    print(prof.key_averages().table(sort_by="cpu_time_total", row_limit=12))


if __name__ == "__main__":
    main()
