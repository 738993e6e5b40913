"""W4a (BENCHMARKS.md): W1's depth search on a Llama-3-8B-shaped model with random weights.

    python bench/w4_scale.py [--generations 6] [--out runs/w4] [--small]

Writes a model directory with the Llama-3-8B shape (hidden 4096, 32 layers, 32 heads / 8 KV
heads, MLP 14336, vocab 128256) and random bf16 weights (nothing is downloaded; the tokenizer
is the built-in tiny model's, whose ids all lie inside the vocabulary), then runs W1's settings:
drop 8+8 of 32+32 sublayers, KL on 131,072 calibration tokens of 1024, 64 initial candidates on
2,048 tokens, 32 offspring, stages 2@2048 then 1@32768. Prints seconds per generation, the FLOP
floor per generation (candidate tokens x 2 x parameters / 790 TFLOP/s) and their ratio.
`--small` shrinks the shape for a CPU smoke test.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

from record import RESULTS, append

PEAK_FLOPS = 790e12  # H200 dense bf16, as in BENCHMARKS.md


def make_model(out: Path, small: bool, device: str) -> int:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from evopress.session import resolve_model

    shape = dict(hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                 intermediate_size=14336, vocab_size=128256)
    if small:
        shape = dict(hidden_size=64, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                     intermediate_size=128, vocab_size=128256)
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


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--generations", type=int, default=6)
    p.add_argument("--out", default="runs/w4")
    p.add_argument("--small", action="store_true")
    p.add_argument("--device", default="cuda")
    p.add_argument("--results", default=str(RESULTS), help="append the figures here ('' = do not)")
    a = p.parse_args()

    import torch

    from evopress.api import drop
    from evopress.config import BaselineConfig, DataConfig, DropConfig, RunConfig, SearchConfig

    figures = {}

    def figure(name, value):
        figures[name] = value
        print(json.dumps({"figure": name, "value": value}), flush=True)

    out = Path(a.out)
    t0 = time.perf_counter()
    params = make_model(out / "model", a.small, a.device)
    figure("W4 model parameters", params)
    figure("W4 model build + save seconds", round(time.perf_counter() - t0, 1))
    tokens = 16_384 if a.small else 131_072
    stages = ((2, 1024), (1, 4096)) if a.small else ((2, 2048), (1, 32768))
    cfg = RunConfig(model=str(out / "model"), device=a.device, dtype="bfloat16", run_dir=str(out / "search"),
                    export_format="none", batch_size=32,
                    data=DataConfig(calibration="builtin", seq_len=1024 if not a.small else 256,
                                    calibration_tokens=tokens, heldout_tokens=8_192),
                    drop=DropConfig(target=0.25, granularity="sublayer"),
                    search=SearchConfig(generations=a.generations, offspring=32, stages=stages,
                                        initial=64, initial_tokens=stages[0][1]),
                    baselines=BaselineConfig(names=()))
    if a.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    run = drop(cfg, log=lambda s: print(s, flush=True) if not s.startswith("gen") else None)
    figure("W4a whole run seconds", round(time.perf_counter() - t0, 1))
    evolve = [h for h in run.history if h["phase"] == "evolve"]
    steady = [h["seconds"] for h in evolve[2:]] or [h["seconds"] for h in evolve]
    per_gen = statistics.median(steady)
    candidate_tokens = 32 * stages[0][1] + 3 * stages[1][1]
    floor = candidate_tokens * 2 * params / PEAK_FLOPS
    figure("W4a s/generation (median, gens 3+)", round(per_gen, 3))
    figure("W4a FLOP floor s/generation", round(floor, 3))
    figure("W4a ratio to the FLOP floor", round(per_gen / floor, 2))
    figure("W4a candidate tokens/s (median)", round(statistics.median(h["tokens_per_s"] for h in evolve)))
    if a.device == "cuda":
        figure("W4a peak GPU memory GiB", round(torch.cuda.max_memory_allocated() / 2**30, 1))
        figure("device", torch.cuda.get_device_name())
    if a.results:
        append("W4a depth search at 8B scale", " ".join(["python"] + sys.argv), figures, a.results)


if __name__ == "__main__":
    main()
