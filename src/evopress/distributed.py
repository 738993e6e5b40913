"""Candidate evaluation spread over the GPUs of one host (`torchrun --nproc_per_node N`).

Every process runs the same search with the same seed, so all of them ask the same genomes in
the same order. Inside each objective call the genomes are dealt round-robin to the processes,
each scores its share on its own GPU, and the values are gathered, so every process tells its
strategy the same numbers and the search stays in lock-step: the result equals one process's for
the same seed (the value of a genome depends only on the genome and the minibatch).

Process 0 owns the run directory and the log; process r > 0 writes to `RUN_DIR/rank<r>/` and
exports nothing.
"""

from __future__ import annotations

import atexit
import dataclasses
import os
from collections.abc import Sequence

import torch
import torch.distributed as dist


def world() -> tuple[int, int]:
    """(rank, world size), joining the process group `torchrun` describes on first use."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size == 1:
        return 0, 1
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
        atexit.register(dist.destroy_process_group)
    return dist.get_rank(), dist.get_world_size()


def barrier() -> None:
    """Wait for every process (a no-op outside torchrun)."""
    if world()[1] > 1:
        dist.barrier()


def for_rank(cfg, log):
    """This process's config and log: its own GPU, its own run directory unless it is rank 0."""
    rank, size = world()
    if size == 1:
        return cfg, log
    device = cfg.device
    if torch.cuda.is_available() and device in ("auto", "cuda"):
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', rank))}"
        torch.cuda.set_device(device)
    elif device == "auto":
        device = "cpu"
    if rank == 0:
        return dataclasses.replace(cfg, device=device), log
    run_dir = os.path.join(cfg.run_dir, f"rank{rank}")
    return dataclasses.replace(cfg, device=device, run_dir=run_dir, export_format="none"), lambda s: None


class SplitObjective:
    """An objective whose calls are shared out over the processes; values gathered to all."""

    def __init__(self, objective):
        self.objective = objective
        self.rank, self.size = world()

    def __getattr__(self, name):
        return getattr(self.objective, name)

    def __call__(self, genomes: Sequence, fidelity) -> list[float]:
        mine = list(range(self.rank, len(genomes), self.size))
        values = self.objective(genomes, fidelity, only=mine) if mine else []
        gathered: list = [None] * self.size
        dist.all_gather_object(gathered, values)
        out = [0.0] * len(genomes)
        for rank, part in enumerate(gathered):
            for i, v in zip(range(rank, len(genomes), self.size), part):
                out[i] = v
        return out
