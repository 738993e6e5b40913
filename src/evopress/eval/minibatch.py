"""Deterministic calibration minibatches of an exact token count.

As in the reference `sample_minibatch` (arXiv 2410.14649, multi-step selection): rows are taken
in a random order, whole, until the requested number of tokens is reached, the last one cut
short to hit it exactly. Here a "token" is a scored position (one next-token prediction), and
only those positions are fed, so a minibatch of T tokens is exactly T tokens of compute and
T terms of the mean.

The order depends only on (seed, draw), not on T: two selection stages that use the same draw
get nested minibatches, the smaller a prefix of the larger. It is a sort by SHA-256, so it is
the same on every platform and library version, and a resumed search sees the same data.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache

from evopress.errors import DataError


@dataclass(frozen=True)
class Minibatch:
    """Score the first `positions[i]` positions of token row `rows[i]`, for every i."""

    rows: tuple[int, ...]
    positions: tuple[int, ...]

    @property
    def tokens(self) -> int:
        return sum(self.positions)


@lru_cache(maxsize=64)
def row_order(n_rows: int, seed: int, draw: int) -> tuple[int, ...]:
    """A permutation of `range(n_rows)` determined by `(seed, draw)` alone."""
    def key(row: int) -> bytes:
        return hashlib.sha256(f"evopress-minibatch:{seed}:{draw}:{row}".encode()).digest()
    return tuple(sorted(range(n_rows), key=key))


def sample_minibatch(n_rows: int, row_tokens: int, tokens: int, seed: int, draw: int) -> Minibatch:
    """Exactly `tokens` scored positions from rows of `row_tokens` positions each.

    Rows follow `row_order(n_rows, seed, draw)`; each is taken whole while it fits, and the
    last one taken is truncated to its first positions so the total is exactly `tokens`.
    """
    available = n_rows * row_tokens
    if tokens < 1:
        raise DataError(f"a minibatch needs at least 1 token, got {tokens}")
    if tokens > available:
        raise DataError(f"asked for {tokens} tokens but the calibration set has only "
                        f"{available} ({n_rows} rows x {row_tokens} predicted tokens per row); "
                        "lower the stage's token budget or add calibration data")
    rows, positions = [], []
    remaining = tokens
    for row in row_order(n_rows, seed, draw):
        if remaining == 0:
            break
        take = min(row_tokens, remaining)
        rows.append(row)
        positions.append(take)
        remaining -= take
    return Minibatch(tuple(rows), tuple(positions))
