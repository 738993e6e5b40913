"""`evopress train` on a GPU: post-training (DarwinLM, arXiv 2502.07780, §3.3) of a pruned model of
the Llama-3-8B shape by distillation from its dense model, with fp32 masters and AdamW.

    python bench/train_speed.py [--layers 32] [--target 0.5] [--tokens 262144] [--out runs/train-speed]

Builds the dense model (bench/w4_scale.py: random weights, so the losses mean nothing; speed and
memory depend on the shapes alone), prunes it with `evopress prune --export pruned` (a short
search without training, bench/prune_speed.py), deletes the database, then runs `post_train` in
this process and reports its tokens/s against the FLOP floor of a KD training token: 6 x the
student's parameters (forward and backward) plus 2 x the teacher's (its forward), at the H200's
dense bf16 peak; and the peak GPU memory. Disk: the last step's checkpoint holds 12 bytes a
student parameter (fp32 masters and both AdamW moments), so `--layers` shortens the model where
the disk is small.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

from record import Figures, append

PEAK_FLOPS = 790e12  # H200 dense bf16, as in BENCHMARKS.md


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--layers", type=int, default=32, help="blocks of the 8B shape (32: the whole model)")
    p.add_argument("--target", type=float, default=0.5, help="fraction of block parameters kept")
    p.add_argument("--tokens", type=int, default=262_144, help="training tokens")
    p.add_argument("--seq-len", type=int, default=1024)
    p.add_argument("--train-batch", type=int, default=4)
    p.add_argument("--out", default="runs/train-speed")
    p.add_argument("--small", action="store_true", help="a tiny model on the CPU (a smoke test of this script)")
    p.add_argument("--results", default="", help="append the figures here ('' = do not)")
    a = p.parse_args()

    import torch
    from prune_speed import prune
    from w4_scale import make_model

    from evopress.config import replace
    from evopress.train.post import PostConfig, post_train

    figure, out = Figures(), Path(a.out)
    dense = out / "dense"
    device = "cpu" if a.small else "cuda"
    params = make_model(dense, a.small, device, 0 if a.small else a.layers)
    figure("dense params", params)
    t0 = time.perf_counter()
    pruning = argparse.Namespace(model=str(dense), out=str(out / "prune"), device=device, dtype="float32" if a.small else "bfloat16",
                                 calibration_tokens=8192, target=a.target, generations=2)
    result = prune(pruning)
    figure("database + search + export seconds", round(time.perf_counter() - t0, 1))
    shutil.rmtree(out / "prune" / "run" / "database", ignore_errors=True)  # disk for the checkpoint
    student = Path(result.export["path"])
    student_params = result.export["params"]
    figure("pruned params", student_params)

    if not a.small:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    cfg = PostConfig(model=str(student), teacher=str(dense), out=str(out / "trained"), tokens=a.tokens,
                     data="builtin", seq_len=a.seq_len, heldout_tokens=8 * a.seq_len, device=device,
                     train=replace(PostConfig().train, loss="kd", train_batch=a.train_batch, warmup_steps=4))
    stamps = []  # after every step (the loop reads each step's loss, so a stamp follows the GPU's work)
    t0 = time.perf_counter()
    report = post_train(cfg, on_step=lambda step: stamps.append(time.perf_counter()))
    figure("post_train seconds (load, score, train, checkpoint, write)", round(time.perf_counter() - t0, 1))
    figure("steps x tokens", [report["steps"], a.train_batch * a.seq_len])
    figure("training seconds (the loop, checkpoints included)", report["seconds"])
    figure("training tokens/s", report["tokens_per_second"])
    steps = sorted(t1 - t0 for t0, t1 in zip(stamps, stamps[1:-1]))  # the last step writes the final checkpoint
    steady = a.train_batch * a.seq_len / steps[len(steps) // 2]
    figure("steady tokens/s (median step, the final checkpoint left out)", round(steady))
    floor = (6 * student_params + 2 * params) / PEAK_FLOPS  # seconds a token
    figure("FLOP floor tokens/s (6 x student + 2 x teacher params a token)", round(1 / floor))
    figure("ratio to the FLOP floor: whole loop, steady", [round(report["tokens_per_second"] ** -1 / floor, 2),
                                                            round(steady ** -1 / floor, 2)])
    if not a.small:
        figure("peak GPU memory GiB (training)", round(torch.cuda.max_memory_allocated() / 2**30, 2))
    figure("held-out KL before, after", [report["heldout"]["before"].get("kl"), report["heldout"]["after"].get("kl")])
    if a.results:
        append("post-training on a GPU: evopress train, KD from the dense model", " ".join(["python"] + sys.argv),
               figure, a.results)


if __name__ == "__main__":
    main()
