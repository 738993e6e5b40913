"""Speed of evopress prune's physically smaller export (DarwinLM, arXiv 2502.07780) against the dense model.

    python bench/prune_speed.py [--model zoo:tiny] [--target 0.5] [--device auto] [--out runs/prune-speed]

Runs `evopress prune --export pruned` (a short search: speed depends on the shapes, not on how
good the plan is), then times, interleaved round by round so drift on a shared machine hits all
alike, and as medians:

  prefill  one forward pass over a batch (no cache): batch x seq tokens / seconds
  decode   greedy `generate()` with the KV cache: batch x (new - 1) tokens / (time of `new` tokens
           - time of 1 token), so the prompt's forward pass is not counted

for three models: the dense source model (stock transformers), the dense model written in the
`pruned` layout (all levels dense: the same modeling code as the pruned one, so its ratio is the
pruning's alone) and the pruned export. Prints a table and appends the figures to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from record import RESULTS, append


def prune(a):
    """The prune run's directory: database, a short search, the `pruned` export."""
    from evopress.api import run
    from evopress.config import BaselineConfig, DataConfig, RunConfig, SearchConfig
    from evopress.methods.structured import StructuredConfig

    cfg = RunConfig(method="prune", model=a.model, run_dir=str(Path(a.out) / "run"), device=a.device,
                    dtype=a.dtype, export_format="pruned",
                    data=DataConfig(seq_len=128, calibration_tokens=a.calibration_tokens, heldout_tokens=4096),
                    options=StructuredConfig(target=a.target),
                    search=SearchConfig(generations=a.generations, offspring=8, stages=((2, 1024), (1, 4096)),
                                        initial=0),
                    baselines=BaselineConfig(names=()))
    return run(cfg, log=print)


def dense_in_pruned_layout(run_dir: Path, out: Path) -> Path:
    """The source model through the pruned layout's code: every sublayer at its dense level."""
    from evopress.evaluate import open_plan, run_config
    from evopress.export.pruned import export_structured
    from evopress.methods.structured import Structured
    from evopress.rundir import RunDir

    rd = RunDir(run_dir)
    r, genome = open_plan(rd, "EvoPress", run_config(rd), lambda s: None)
    dense = tuple(0 for _ in genome)
    r.bank.apply(dense)
    return export_structured(r.session.adapter, Structured.cuts(r.bank, dense), r.session.tokenizer, out,
                             overwrite=True)["path"]


def load(path: Path, device, dtype, remote: bool):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, trust_remote_code=remote)
    return model.to(device).eval()


def timings(models: dict, a, device) -> dict:
    """Per model: median seconds of a prefill, of generating 1 token and `a.new` tokens."""
    import torch

    vocab = next(iter(models.values())).config.vocab_size
    gen = torch.Generator().manual_seed(0)
    prefill_x = torch.randint(0, vocab, (a.batch, a.seq), generator=gen).to(device)
    prompt = torch.randint(0, vocab, (a.decode_batch, a.prompt), generator=gen).to(device)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    def clock(fn) -> float:
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        return time.perf_counter() - t0

    def generate(model, new):
        return model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=new,
                              min_new_tokens=new, do_sample=False, pad_token_id=0)

    jobs = {"prefill": lambda m: m(prefill_x, use_cache=False),
            "generate 1": lambda m: generate(m, 1), f"generate {a.new}": lambda m: generate(m, a.new)}
    seconds = {name: {job: [] for job in jobs} for name in models}
    with torch.inference_mode():
        for round_ in range(a.repeats + 1):  # round 0 warms up
            for name, model in models.items():
                for job, fn in jobs.items():
                    s = clock(lambda: fn(model))
                    if round_:
                        seconds[name][job].append(s)
    return {name: {job: statistics.median(v) for job, v in per.items()} for name, per in seconds.items()}


def table(models: dict, times: dict, a) -> tuple[str, dict]:
    figures, rows = {}, []
    speed = {}
    for name, model in models.items():
        t = times[name]
        prefill = a.batch * a.seq / t["prefill"]
        decode = a.decode_batch * (a.new - 1) / (t[f"generate {a.new}"] - t["generate 1"])
        speed[name] = (prefill, decode)
        params = sum(p.numel() for p in model.parameters())
        rows.append((name, params, prefill, decode))
    base, same_code = speed["dense (stock transformers)"], speed["dense (pruned layout)"]
    lines = [f"{'model':30} {'params':>10} {'prefill tok/s':>14} {'decode tok/s':>13} "
             f"{'prefill x':>10} {'decode x':>9} {'vs same code':>13}"]
    for name, params, prefill, decode in rows:
        lines.append(f"{name:30} {params:>10,} {prefill:>14,.0f} {decode:>13,.1f} {prefill / base[0]:>10.2f} "
                     f"{decode / base[1]:>9.2f} {prefill / same_code[0]:>6.2f}/{decode / same_code[1]:<6.2f}")
        figures[f"{name}: params, prefill tok/s, decode tok/s"] = [params, round(prefill), round(decode, 1)]
    pruned = speed["pruned export"]
    figures["pruned / dense (stock): prefill, decode"] = [round(pruned[0] / base[0], 3), round(pruned[1] / base[1], 3)]
    figures["pruned / dense (same code): prefill, decode"] = [round(pruned[0] / same_code[0], 3),
                                                             round(pruned[1] / same_code[1], 3)]
    return "\n".join(lines), figures


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="zoo:tiny")
    p.add_argument("--target", type=float, default=0.5, help="fraction of block parameters kept")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto", help="auto: bfloat16 on a GPU, float32 on the CPU")
    p.add_argument("--out", default="runs/prune-speed")
    p.add_argument("--generations", type=int, default=4)
    p.add_argument("--calibration-tokens", type=int, default=8192)
    p.add_argument("--batch", type=int, default=16, help="prefill rows")
    p.add_argument("--seq", type=int, default=256, help="prefill tokens per row")
    p.add_argument("--decode-batch", type=int, default=4)
    p.add_argument("--prompt", type=int, default=32)
    p.add_argument("--new", type=int, default=128, help="greedy tokens generated")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--results", default=str(RESULTS), help="append the figures here ('' = do not)")
    a = p.parse_args()

    import torch

    from evopress.models.loading import resolve_device
    from evopress.session import resolve_model

    device = torch.device(resolve_device(a.device))
    if a.dtype == "auto":
        a.dtype = "bfloat16" if device.type == "cuda" else "float32"
    dtype = getattr(torch, a.dtype)
    result = prune(a)
    exported = Path(result.export["path"])
    dense_layout = dense_in_pruned_layout(result.run_dir, Path(a.out) / "dense-pruned-layout")
    models = {"dense (stock transformers)": load(Path(resolve_model(a.model)), device, dtype, False),
              "dense (pruned layout)": load(dense_layout, device, dtype, True),
              "pruned export": load(exported, device, dtype, True)}
    times = timings(models, a, device)
    text, figures = table(models, times, a)
    kept = result.plans["EvoPress"]["kept params %"]
    print(f"\nkept {kept:.2f}% of block parameters; {device.type}, {a.dtype}, {torch.get_num_threads()} threads; "
          f"prefill {a.batch}x{a.seq}, decode {a.decode_batch}x{a.new} after a {a.prompt}-token prompt; "
          f"median of {a.repeats}\n{text}")
    figures = {"kept block params %": round(kept, 2), "layer sizes (heads, kv, mlp)": result.export["layer_sizes"],
               "setting": f"{device.type} {a.dtype}, {torch.get_num_threads()} threads, prefill {a.batch}x{a.seq}, "
                          f"decode {a.decode_batch}x{a.new} after {a.prompt}, median of {a.repeats}", **figures}
    print(json.dumps(figures))
    if a.results:
        append("prune speed: pruned export against dense", " ".join(["python"] + sys.argv), figures, a.results)


if __name__ == "__main__":
    main()
