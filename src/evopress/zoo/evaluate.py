"""Held-out perplexity of a causal LM on token windows: exp of the mean next-token NLL."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


@torch.no_grad()
def perplexity(model, windows: torch.Tensor, batch_size: int = 16) -> float:
    """Every window is scored on its own (no context across windows); all tokens weigh the same."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    nll, count = 0.0, 0
    for start in range(0, len(windows), batch_size):
        ids = windows[start : start + batch_size].to(device)
        logits = model(input_ids=ids).logits[:, :-1].float()
        target = ids[:, 1:]
        nll += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), reduction="sum").item()
        count += target.numel()
    model.train(was_training)
    return math.exp(nll / count)


def unigram_perplexity(windows: torch.Tensor) -> float:
    """exp(entropy) of the windows' own token frequencies: no unigram model can score them better.

    A trained LM far below this number has learned context, not just token counts.
    """
    counts = torch.bincount(windows.reshape(-1)).double()
    probs = counts[counts > 0] / counts.sum()
    return math.exp(-(probs * probs.log()).sum().item())
