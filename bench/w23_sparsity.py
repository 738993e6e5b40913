"""W2 + W3 (BENCHMARKS.md): SparseGPT database build and EvoPress sparsity search on the bench model.

    python bench/w23_sparsity.py [--model DIR] [--generations 24] [--out runs/w23]
        [--compile] [--skip-build] [--profile]

W2: SparseGPT levels for every q,k,v,o,gate,up,down projection of all layers from 2^20
calibration tokens (sequences of 1024), grid 0.3-0.7 (the W3 grid around 50%); figures: build
seconds, store bytes, peak GPU memory. W3: 50% average sparsity, 64 offspring, stages 8@2048,
2@16384, 1@65536, KL fitness; figures: seconds per generation (median of the steady state),
final KL, held-out perplexity of EvoPress and uniform. One JSON line per figure.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from record import RESULTS, append


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="", help="HF model dir; default: train the zoo bench preset")
    p.add_argument("--generations", type=int, default=24, help="enough for the median of generations 3+ to be past the warm-up")
    p.add_argument("--out", default="runs/w23")
    p.add_argument("--results", default=str(RESULTS), help="append the figures here ('' = do not)")
    p.add_argument("--profile", action="store_true", help="then profile two search generations (CUDA ops)")
    p.add_argument("--compile", action="store_true", help="KL through torch.compile (search in OUT/search-compile)")
    p.add_argument("--skip-build", action="store_true", help="W3 only, on the database already in OUT/db")
    p.add_argument("--train-tokens", type=int, default=0, help="train the bench preset on this many tokens "
                   "(0 = the preset's 40M; fewer only for quick timing checks, the model is then undertrained)")
    p.add_argument("--batch-size", type=int, default=64, help="calibration rows per forward pass")
    p.add_argument("--stack-tokens", type=int, default=1 << 18, help="candidate tokens per stacked pass")
    a = p.parse_args()

    import torch

    from evopress.api import run as sparsify
    from evopress.config import BaselineConfig, DataConfig, RunConfig, SearchConfig
    from evopress.methods.sparsity import SparsityConfig

    figures = {}

    def figure(name, value):
        figures[name] = value
        print(json.dumps({"figure": name, "value": value}), flush=True)

    model = a.model
    if not model:
        from evopress.zoo import train
        t0 = time.perf_counter()
        from evopress.zoo.presets import get_preset
        preset = get_preset("bench")
        if a.train_tokens:
            preset = preset.replace(train_tokens=a.train_tokens)
        model = str(train(preset, Path(a.out) / "bench-model"))
        figure("zoo bench train seconds", round(time.perf_counter() - t0, 1))
    run_dir = Path(a.out) / ("search-compile" if a.compile else "search")
    cfg = RunConfig(method="sparsify", model=model, device="cuda", dtype="bfloat16", run_dir=str(run_dir),
                    data=DataConfig(calibration="builtin+site-packages", seq_len=1024, calibration_tokens=2**20,
                                    heldout_tokens=262_144),
                    batch_size=a.batch_size,
                    options=SparsityConfig(target=0.5, database=str(Path(a.out) / "db"), grid=(0.3, 0.7, 0.025)),
                    baselines=BaselineConfig(names=("uniform",)),
                    search=SearchConfig(generations=a.generations, offspring=64,
                                        stages=((8, 2048), (2, 16384), (1, 65536)), compile=a.compile,
                                        stack_tokens=a.stack_tokens))
    if not a.skip_build:
        build(cfg, a.out, figure)
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    lines = []
    run = sparsify(cfg, log=lines.append, steps=("search", "eval"))
    figure("W3 search+eval seconds", round(time.perf_counter() - t0, 1))
    figure("W3 variant load", [x for x in lines if x.startswith("variants")])
    steady = [h["seconds"] for h in run.history[2:]] or [h["seconds"] for h in run.history]
    figure("W3 s/generation (median, gens 3+)", round(statistics.median(steady), 3))
    figure("W3 seconds of each generation", [round(h["seconds"], 3) for h in run.history])
    figure("W3 candidate tokens/s (median)", round(statistics.median(h["tokens_per_s"] for h in run.history)))
    figure("W3 peak GPU memory GiB", round(torch.cuda.max_memory_allocated() / 2**30, 2))
    for name, plan in run.plans.items():
        figure(f"W3 {name} search fitness / calibration KL (shared tokens) / held-out ppl",
               [plan["fitness"] and round(plan["fitness"], 5), round(plan["kl"], 5), round(plan.get("ppl", 0), 3)])
    figure("W3 dense held-out ppl", run.dense_ppl)
    figure("compile", a.compile)
    figure("device", torch.cuda.get_device_name())
    if a.results:
        append("W2+W3 sparsity database and search", " ".join(["python"] + sys.argv), figures, a.results)
    if a.profile:
        profile_search(cfg)


def build(cfg, out: str, figure) -> None:
    """W2: the database, timed."""
    import torch

    from evopress.api import run as sparsify

    lines = []
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    sparsify(cfg, log=lines.append, steps=("db",))
    figure("W2 build seconds (incl. model load and calibration data)", round(time.perf_counter() - t0, 1))
    figure("W2 build log", [x for x in lines if x.startswith("database")][-2:])
    figure("W2 peak GPU memory GiB", round(torch.cuda.max_memory_allocated() / 2**30, 2))
    store_bytes = sum(f.stat().st_size for f in (Path(out) / "db").iterdir())
    figure("W2 store GB", round(store_bytes / 1e9, 3))


def open_search(cfg, suffix: str, generations: int):
    """A sparsity run of `generations` generations on the built database (bank and teacher set up),
    in its own run directory."""
    from evopress.config import replace
    from evopress.run import Run

    cfg = replace(cfg, run_dir=cfg.run_dir + suffix, search=replace(cfg.search, generations=generations))
    r = Run(cfg, log=lambda s: None).open().prepare()
    r.objective  # noqa: B018  (teacher targets and the evaluator, before the timed part)
    return r


def profile_search(cfg, generations: int = 2) -> None:
    """Device and host time of `generations` EvoPress generations (bank and teacher set up first),
    then Python's view of as many more, after a warm generation."""
    from torch.profiler import ProfilerActivity, profile

    from evopress.run import search

    r = open_search(cfg, "-profile", generations)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof, syncs_counted() as syncs:
        search(r)
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=25))
    print(prof.key_averages().table(sort_by="cpu_time_total", row_limit=12))
    print(json.dumps({"figure": "host synchronisations by source line", "value": syncs.most_common(12)}))
    host_profile(cfg, generations)


def host_profile(cfg, generations: int) -> None:
    """Where the host's time goes in `generations` generations after a warm one (cProfile)."""
    import cProfile
    import pstats

    from evopress.run import search

    search(open_search(cfg, "-cprofile", 1))  # warm: decoded levels, compiled graphs
    r = open_search(cfg, "-cprofile", generations + 1)  # the journal answers the warm generation again
    profiler = cProfile.Profile()
    t0 = time.perf_counter()
    profiler.runcall(search, r)
    print(json.dumps({"figure": "host-profiled generations, wall seconds", "value": round(time.perf_counter() - t0, 3)}))
    pstats.Stats(profiler).sort_stats("tottime").print_stats(30)


@contextmanager
def syncs_counted():
    """Count the operations that wait for the GPU, by the Python line that called them."""
    import warnings
    from collections import Counter

    import torch

    counts = Counter()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield counts
    finally:
        torch.cuda.set_sync_debug_mode("default")
    counts.update(f"{w.filename.split('/src/')[-1]}:{w.lineno}" for w in caught
                  if "synchroniz" in str(w.message))


if __name__ == "__main__":
    main()
