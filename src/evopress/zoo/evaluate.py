"""The unigram reference a trained zoo model must beat (its perplexity comes from evopress.eval)."""

from __future__ import annotations

import math

import torch


def unigram_perplexity(windows: torch.Tensor) -> float:
    """exp(entropy) of the windows' own token frequencies: no unigram model can score them better.

    A trained LM far below this number has learned context, not just token counts.
    """
    counts = torch.bincount(windows.reshape(-1)).double()
    probs = counts[counts > 0] / counts.sum()
    return math.exp(-(probs * probs.log()).sum().item())
