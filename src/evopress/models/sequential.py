"""Run a model one decoder block at a time, with activations kept off the compute device.

Database builders need every block's inputs on calibration data, with blocks processed in order
(sequential propagation, EvoPress §3.1, arXiv 2410.14649). Only one block's weights and one
batch of activations sit on the compute device at a time; the rest stays where the model was
loaded (`offload`, usually the CPU), so a model larger than the accelerator can be processed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from evopress.models.capture import _hidden


class _Stop(Exception):
    """Raised by the first block's hook: the inputs are captured, the rest is not needed."""


def _to(value, device):
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, tuple):
        return tuple(_to(v, device) for v in value)
    if isinstance(value, dict):
        return {k: _to(v, device) for k, v in value.items()}
    return value


@dataclass
class Activations:
    """Per calibration batch: the hidden states entering the current block and the block kwargs."""

    hidden: list[torch.Tensor]
    kwargs: list[dict]

    @property
    def tokens(self) -> int:
        return sum(h.shape[0] * h.shape[1] for h in self.hidden)


@torch.no_grad()
def first_block_inputs(adapter, tokens: torch.Tensor, batch_size: int, device, offload) -> Activations:
    """What the first block receives for each batch of `tokens` ([rows, seq] ids)."""
    captured: dict = {}

    def grab(module, args, kwargs):
        captured["hidden"] = args[0] if args else kwargs.pop("hidden_states")
        captured["kwargs"] = {k: v for k, v in kwargs.items() if k != "hidden_states"}
        raise _Stop

    front = adapter.embedding_modules()
    homes = [next(m.parameters(), next(m.buffers(), torch.empty(0))).device for m in front]
    for m in front:
        m.to(device)
    handle = adapter.blocks()[0].register_forward_pre_hook(grab, with_kwargs=True)
    hidden, kwargs = [], []
    try:
        for start in range(0, tokens.shape[0], batch_size):
            try:
                adapter.decoder(input_ids=tokens[start:start + batch_size].to(device), use_cache=False)
            except _Stop:
                pass
            hidden.append(captured["hidden"].to(offload))
            kwargs.append(_to(captured["kwargs"], offload))
    finally:
        handle.remove()
        for m, home in zip(front, homes):
            m.to(home)
    return Activations(hidden, kwargs)


@torch.no_grad()
def run_block(block: nn.Module, acts: Activations, device, offload) -> Activations:
    """Feed every batch through `block` (on `device`); its outputs are the next block's inputs."""
    out = []
    for hidden, kwargs in zip(acts.hidden, acts.kwargs):
        result = block(hidden.to(device), **_to(kwargs, device))
        out.append(_hidden(result).to(offload))
    return Activations(out, acts.kwargs)


class on_device:
    """Context manager: a module moved to `device` for the duration, then back where it was."""

    def __init__(self, module: nn.Module, device):
        self.module, self.device = module, torch.device(device)
        self.home = next(module.parameters()).device

    def __enter__(self):
        self.module.to(self.device)
        return self.module

    def __exit__(self, *exc):
        self.module.to(self.home)
        return False
