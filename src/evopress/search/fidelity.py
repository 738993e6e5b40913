"""What a batch objective is asked for: a token budget and which data draw to use."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Fidelity:
    """Evaluate on `tokens` calibration tokens drawn with the deterministic key `draw`.

    Every candidate of one selection stage gets the same Fidelity, so they are compared on the
    same tokens (common random numbers, as in EvoPress's multi-step selection, arXiv 2410.14649
    Alg. 1). The objective owns the data; `draw` only names which sample to take, so a resumed
    search asks for exactly the same tokens again.
    """

    tokens: int
    draw: int
