"""W6 (BENCHMARKS.md): the structured database and the training-aware search on the bench model.

    python bench/w6_prune.py [--model DIR] [--generations 6] [--out runs/w6] [--small]

Database: heads and MLP channels of every block, 10 levels each (ZipLM OBS with weight update);
figures: build seconds, store bytes, peak GPU memory. Search: 50% of block parameters, 16
offspring, stages 8@1k, 4@2k, 2@4k, 1@8k fitness tokens after 10k/50k/100k/200k training tokens
(DarwinLM's schedule; fp32 masters, AdamW at 1e-4, 8 sequences of 1024 per step); figures:
seconds per generation (median of generations 2+) against the FLOP floor of its tokens (a fitness
token costs one forward, a training token three: forward and backward; 2 x parameters FLOPs per
forward token at 790 TFLOP/s), peak memory, calibration KL and held-out perplexity of EvoPress,
the same search without training, uniform and DP. `--small` runs the shipped tiny model on the
CPU with a shrunken schedule (a smoke test of the script; no figure of it means anything).

`--shape 8b`: the same search on a Llama-3-8B-shaped model with random weights (bench/w4_scale.py;
only time and memory mean anything there). Full training would keep 16 bytes a parameter (128 GB)
beside the model and the levels, so candidates train rank-16 adapters (`--lora-rank`), on the LM
loss (the dense model's log-probs of a stage's 200k tokens at a 128k vocabulary would be 51 GB),
4 sequences a step; 32,768 calibration tokens (the stages score at most 8,192), no baselines and
no held-out evaluation. With `--small`, a tiny model of that vocabulary on the CPU.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from record import RESULTS, Figures, append, block_seconds

PEAK_FLOPS = 790e12  # H200 dense bf16, as in BENCHMARKS.md
STAGES = ((8, 1024, 10_000), (4, 2048, 50_000), (2, 4096, 100_000), (1, 8192, 200_000))
SMALL_STAGES = ((4, 512, 512), (2, 1024, 1024), (1, 2048, 2048))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="", help="HF model dir; default: train the zoo bench preset")
    p.add_argument("--generations", type=int, default=6)
    p.add_argument("--out", default="runs/w6")
    p.add_argument("--results", default=str(RESULTS), help="append the figures here ('' = do not)")
    p.add_argument("--small", action="store_true", help="tiny model on the CPU: a smoke test")
    p.add_argument("--baselines", default="untrained,uniform,dp", help="comma list ('' = none)")
    p.add_argument("--shape", choices=("bench", "8b"), default="bench",
                   help="bench: the zoo bench model (trained first) | 8b: Llama-3-8B shape, random weights")
    p.add_argument("--profile", action="store_true", help="then one more generation with its parts timed, "
                   "and the dense model's plain training step at the same batch (where the time goes)")
    a = p.parse_args()

    import torch

    from evopress.api import run as prune
    from evopress.config import BaselineConfig, DataConfig, RunConfig, SearchConfig, TrainConfig, replace
    from evopress.methods.structured import StructuredConfig

    figure = figures = Figures()

    cuda = torch.cuda.is_available() and not a.small
    model = "zoo:tiny" if a.small else a.model
    if a.shape == "8b":
        from w4_scale import make_model

        t0 = time.perf_counter()
        make_model(Path(a.out) / "model", a.small, "cuda" if cuda else "cpu")
        model = str(Path(a.out) / "model")
        figure("8B-shape model build + save seconds", round(time.perf_counter() - t0, 1))
    elif not model:
        from evopress.zoo import train

        t0 = time.perf_counter()
        model = str(train("bench", Path(a.out) / "bench-model"))
        figure("zoo bench train seconds", round(time.perf_counter() - t0, 1))
    seq = 256 if a.small else 1024
    cfg = RunConfig(method="prune", model=model, device="cuda" if cuda else "cpu",
                    dtype="bfloat16" if cuda else "float32", run_dir=str(Path(a.out) / "search"), export_format="none",
                    data=DataConfig(calibration="builtin" if a.small else "builtin+site-packages", seq_len=seq,
                                    calibration_tokens=16 * seq if a.small else 131_072,
                                    heldout_tokens=8 * seq if a.small else 262_144,
                                    training_tokens=16 * seq if a.small else 262_144),
                    batch_size=8 if a.small else 32,
                    options=StructuredConfig(target=0.5, database=str(Path(a.out) / "db")),
                    train=TrainConfig(lr=1e-4, train_batch=2 if a.small else 8),
                    baselines=BaselineConfig(names=tuple(b for b in a.baselines.split(",") if b)),
                    search=SearchConfig(generations=a.generations, offspring=8 if a.small else 16, initial=0,
                                        stages=SMALL_STAGES if a.small else STAGES))
    if a.shape == "8b":
        tokens = 16 * seq if a.small else 32_768
        cfg = replace(cfg, batch_size=8, data=replace(cfg.data, calibration_tokens=tokens, heldout_tokens=4 * seq),
                      train=replace(cfg.train, loss="lm", lora_rank=16, train_batch=2 if a.small else 4),
                      baselines=replace(cfg.baselines, names=()))
    peak = (lambda: torch.cuda.max_memory_allocated() / 2**30) if cuda else (lambda: 0.0)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    lines = []
    t0 = time.perf_counter()
    prune(cfg, log=lines.append, steps=("db",))
    figure("W6 build seconds (incl. model load and calibration data)", round(time.perf_counter() - t0, 1))
    figure("W6 block-work seconds (sum over blocks)", round(block_seconds(lines), 1))
    figure("W6 peak GPU memory GiB (build)", round(peak(), 2))
    from evopress.database.store import VariantStore

    figure("W6 store MB", round(VariantStore.open(Path(a.out) / "db").nbytes() / 1e6, 2))
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    run = prune(cfg, log=print, steps=("search",) if a.shape == "8b" else ("search", "eval"))
    figure("W6 search+eval seconds", round(time.perf_counter() - t0, 1))
    params = _parameters(model)
    steady = run.history[1:] or run.history
    seconds = statistics.median(h["seconds"] for h in steady)
    floor = statistics.median((h["tokens"] + 3 * h.get("train_tokens", 0)) * 2 * params / PEAK_FLOPS for h in steady)
    figure("W6 s/generation (median, gens 2+)", round(seconds, 3))
    figure("W6 FLOP floor s/generation (fitness + 3 x training tokens)", round(floor, 4))
    figure("W6 ratio to the FLOP floor", round(seconds / floor, 2))
    figure("W6 fitness and training tokens per generation", [steady[0]["tokens"], steady[0].get("train_tokens", 0)])
    figure("W6 peak GPU memory GiB (search)", round(peak(), 2))
    for name, plan in run.plans.items():
        figure(f"W6 {name}: kept params %, calibration KL, held-out ppl",
               [round(plan["kept params %"], 2), round(plan["kl"], 5), round(plan.get("ppl", 0), 3)])
    if a.shape != "8b":
        figure("W6 dense held-out ppl", run.dense_ppl)
    figure("device", torch.cuda.get_device_name() if cuda else "cpu")
    if a.profile:
        _profile(cfg, model, figure, steady[0].get("train_tokens", 0), cuda)
    if a.results and not a.small:
        append("W6 structured database and training-aware search" + (" at the 8B shape" if a.shape == "8b" else ""), " ".join(["python"] + sys.argv), figures, a.results)


def _profile(cfg, model: str, figure, train_tokens: int, cuda: bool) -> None:
    """Where a generation's time goes: one fresh generation with its parts timed (device synced
    around each: teacher log-probs, master set-up, loss forward, backward + optimizer step, restore,
    scoring, the fast objective), and the plain training step (dense model, the same trainer and
    batch, fused AdamW on and off)."""
    import torch

    import evopress.train as train_pkg
    from evopress.api import run as prune
    from evopress.config import replace
    from evopress.eval.trained import TrainedObjective
    from evopress.models import load_model
    from evopress.session import resolve_model
    from evopress.train import lm_loss, train
    from evopress.train.trainer import Masters

    sync = torch.cuda.synchronize if cuda else (lambda: None)
    parts: dict[str, float] = {}

    def timed(name, fn):
        def wrapper(*args, **kwargs):
            sync()
            t0 = time.perf_counter()
            out = fn(*args, **kwargs)
            sync()
            parts[name] = parts.get(name, 0.0) + time.perf_counter() - t0
            return out
        return wrapper

    class Proxy:  # a timed callable object that still answers the objective's attributes
        def __init__(self, name, fn):
            self.call, self.fn = timed(name, fn), fn

        def __call__(self, *args, **kwargs):
            return self.call(*args, **kwargs)

        def __getattr__(self, attr):
            return getattr(self.fn, attr)

    Masters.__init__ = timed("masters set-up", Masters.__init__)
    Masters.step = timed("backward + optimizer step", Masters.step)
    Masters.restore = timed("restore", Masters.restore)
    train_pkg.batches = timed("teacher log-probs of the stage's rows", train_pkg.batches)
    loss_for = train_pkg.loss_for
    train_pkg.loss_for = lambda c: timed("loss forward", loss_for(c))
    init = TrainedObjective.__init__

    def patched(self, fast, score, apply, *rest, **kw):
        init(self, Proxy("fast objective (no training)", fast), Proxy("scoring trained candidates", score),
             Proxy("apply levels", apply), *rest, **kw)
    TrainedObjective.__init__ = patched
    one = replace(cfg, run_dir=cfg.run_dir + "-profile", search=replace(cfg.search, generations=1),
                  baselines=replace(cfg.baselines, names=()))
    prune(one, log=lambda line: None, steps=("db",))
    t0 = time.perf_counter()
    prune(one, log=lambda line: None, steps=("search",))
    figure("W6 timed generation seconds (synced parts)", round(time.perf_counter() - t0, 2))
    for name, seconds in sorted(parts.items(), key=lambda kv: -kv[1]):
        figure(f"W6 part: {name} (s)", round(seconds, 2))
    net, _ = load_model(resolve_model(model), dtype=cfg.dtype, device=cfg.device)
    rows = torch.randint(0, net.config.vocab_size, (cfg.train.train_batch * 21, cfg.data.seq_len), device=cfg.device)
    steps = list(rows.split(cfg.train.train_batch))
    for fused in (True, False):
        adamw = torch.optim.AdamW
        torch.optim.AdamW = lambda params, fused_=fused, **kw: adamw(params, **{**kw, "fused": fused_ and cuda})
        train(net, steps[:1], cfg.train, lm_loss).restore()  # warm-up
        sync()
        t0 = time.perf_counter()
        train(net, steps[1:], cfg.train, lm_loss).restore()
        sync()
        torch.optim.AdamW = adamw
        rate = 20 * cfg.train.train_batch * cfg.data.seq_len / (time.perf_counter() - t0)
        figure(f"W6 plain training step, dense model, fused AdamW {fused} (tokens/s)", round(rate))
        figure(f"W6 a generation's training tokens at that rate, fused {fused} (s)", round(train_tokens / rate, 2))


def _parameters(model: str) -> int:
    from transformers import AutoConfig, AutoModelForCausalLM

    from evopress.session import resolve_model

    import torch

    with torch.device("meta"):
        m = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(resolve_model(model)))
    return sum(p.numel() for p in m.parameters())


if __name__ == "__main__":
    main()
