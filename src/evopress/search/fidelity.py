"""What a batch objective is asked for: a token budget, which data draw to use, and how much
training each candidate gets first."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Fidelity:
    """Evaluate on `tokens` calibration tokens drawn with the deterministic key `draw`.

    Every candidate of one selection stage gets the same Fidelity, so they are compared on the
    same tokens (common random numbers, as in EvoPress's multi-step selection, arXiv 2410.14649
    Alg. 1). The objective owns the data; `draw` only names which sample to take, so a resumed
    search asks for exactly the same tokens again.

    `train_tokens` > 0 asks the objective to train each candidate on that many tokens before it
    is scored (DarwinLM's training-aware selection, arXiv 2502.07780 §3.3), every candidate of
    the stage on the same sequences in the same order.
    """

    tokens: int
    draw: int
    train_tokens: int = 0
