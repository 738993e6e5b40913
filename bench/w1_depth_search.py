"""W1 (BENCHMARKS.md): EvoPress depth search on the zoo's bench model, reference settings.

    python bench/w1_depth_search.py [--model DIR] [--generations 32] [--out runs/w1] [--evaluator batched|simple] [--compile]

Drops 4+4 of 16+16 sublayers with KL fitness on 131,072 calibration tokens (sequences of 1024),
64 random initial candidates on 2,048 tokens, 32 offspring, stages 2@2048 then 1@32768.
Prints one JSON line per figure: seconds per generation (median of the steady state), candidate
tokens per second, final KL and held-out perplexity.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

from record import RESULTS, append


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="", help="HF model dir; default: train the zoo bench preset")
    p.add_argument("--generations", type=int, default=32)
    p.add_argument("--out", default="runs/w1")
    p.add_argument("--evaluator", choices=("batched", "simple"), default="batched")
    p.add_argument("--batch-size", type=int, default=32, help="calibration rows per forward")
    p.add_argument("--compile", action="store_true", help="batched evaluator through torch.compile")
    p.add_argument("--results", default=str(RESULTS), help="append the figures here ('' = do not)")
    a = p.parse_args()

    import torch

    from evopress.api import run as drop
    from evopress.config import BaselineConfig, DataConfig, RunConfig, SearchConfig
    from evopress.methods.depth import DropConfig

    model = a.model
    if not model:
        from evopress.zoo import train
        t0 = time.perf_counter()
        model = str(train("bench", Path(a.out) / "bench-model"))
        print(json.dumps({"figure": "zoo bench train seconds", "value": round(time.perf_counter() - t0, 1)}))
    cfg = RunConfig(model=model, device="cuda", dtype="bfloat16", run_dir=str(Path(a.out) / "search"), batch_size=a.batch_size,
                    export_format="none",
                    data=DataConfig(calibration="builtin+site-packages", seq_len=1024, calibration_tokens=131_072,
                                    heldout_tokens=262_144),
                    options=DropConfig(target=4, granularity="sublayer"),
                    search=SearchConfig(generations=a.generations, offspring=32, stages=((2, 2048), (1, 32768)),
                                        initial=64, initial_tokens=2048, evaluator=a.evaluator,
                                        compile=a.compile),
                    baselines=BaselineConfig(names=()))
    t0 = time.perf_counter()
    run = drop(cfg, log=lambda s: None)
    total = time.perf_counter() - t0
    evolve = [h for h in run.history if h["phase"] == "evolve"]
    steady = [h["seconds"] for h in evolve[2:]] or [h["seconds"] for h in evolve]
    figures = {
        "W1 s/generation (median, gens 3+)": round(statistics.median(steady), 4),
        "W1 seconds of each generation": [round(h["seconds"], 3) for h in evolve],
        "W1 candidate tokens/s (median)": round(statistics.median(h["tokens_per_s"] for h in evolve)),
        "W1 final search KL": round(run.best["fitness"], 6),
        "W1 dense held-out ppl": round(run.dense_ppl, 3),
        "W1 pruned held-out ppl": round(run.best["ppl"], 3),
        "W1 whole run seconds": round(total, 1),
        "evaluator / batch size / compile": [a.evaluator, a.batch_size, a.compile],
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
    }
    if os.environ.get("RANK", "0") == "0":  # under torchrun, process 0 speaks for all
        for name, value in figures.items():
            print(json.dumps({"figure": name, "value": value}))
        if a.results:
            append("W1 depth search", " ".join(["python"] + sys.argv), figures, a.results)


if __name__ == "__main__":
    main()
