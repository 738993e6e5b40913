"""Which token rows are scored, how far into each, and how they are grouped into forward passes.

A *segment* is `(row, n)`: the first `n` positions of one row of a `LongTensor[n_seq, seq_len]`,
each predicting the next token of that row, so `1 <= n <= seq_len - 1`. Only inputs
`row[:n]` are fed, which is exact for a causal model and means a segment of `n` scored tokens
costs `n` tokens of compute. Rows of equal `n` are batched together, so no padding (and no
attention mask) ever enters a forward pass.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch

from evopress.errors import DataError, RecipeError

Segment = tuple[int, int]


def check_tokens(tokens: object) -> None:
    """Fail early, saying the fix, unless `tokens` is a non-empty integer `[n_seq, seq_len>=2]`."""
    if not isinstance(tokens, torch.Tensor) or tokens.dim() != 2:
        shape = tuple(tokens.shape) if isinstance(tokens, torch.Tensor) else type(tokens).__name__
        raise DataError(f"token data must be a 2-D LongTensor [n_seq, seq_len], got {shape}; "
                        "stack equal-length token rows into one tensor")
    if tokens.is_floating_point() or tokens.is_complex():
        raise DataError(f"token data must hold integer token ids, got dtype {tokens.dtype}")
    if tokens.shape[0] == 0 or tokens.shape[1] == 0:
        raise DataError(f"token data is empty (shape {tuple(tokens.shape)}); provide at least "
                        "one row of calibration or evaluation tokens")
    if tokens.shape[1] < 2:
        raise DataError("token rows need at least 2 tokens so that one next token can be "
                        f"predicted, got seq_len={tokens.shape[1]}; use longer rows")


def plan_segments(
    tokens: torch.Tensor,
    rows: Sequence[int] | None = None,
    positions: int | Sequence[int] | None = None,
) -> list[Segment]:
    """Validate and pair up `rows` (default: all, in order) with their scored position counts.

    `positions` is one count for every row, one count per row, or None for all `seq_len - 1`.
    """
    check_tokens(tokens)
    n_seq, seq_len = tokens.shape
    rows = list(range(n_seq)) if rows is None else [int(r) for r in rows]
    if not rows:
        raise DataError("no rows selected to score; select at least one row")
    if positions is None:
        counts = [seq_len - 1] * len(rows)
    elif isinstance(positions, int):
        counts = [positions] * len(rows)
    else:
        counts = [int(n) for n in positions]
    if len(counts) != len(rows):
        raise DataError(f"got {len(counts)} position counts for {len(rows)} rows; "
                        "give one count per selected row")
    for row, n in zip(rows, counts):
        if not 0 <= row < n_seq:
            raise DataError(f"row {row} is out of range for {n_seq} token rows")
        if not 1 <= n <= seq_len - 1:
            raise DataError(f"cannot score {n} positions of a row of {seq_len} tokens; "
                            f"use 1..{seq_len - 1} (the last token has no next token)")
    return list(zip(rows, counts))


def segment_batches(
    segments: Sequence[Segment], batch_size: int
) -> Iterator[tuple[list[int], int]]:
    """Yield `(rows, n)`: runs of consecutive segments of equal `n`, at most `batch_size` long.

    Consecutive, so that the order (and hence the floating-point summation order) of a
    result depends only on the segments, never on anything else evaluated alongside.
    """
    if batch_size < 1:
        raise RecipeError(f"batch_size must be at least 1, got {batch_size}")
    batch: list[int] = []
    width = 0
    for row, n in segments:
        if batch and (n != width or len(batch) == batch_size):
            yield batch, width
            batch = []
        batch.append(row)
        width = n
    if batch:
        yield batch, width


def device_index(values: Sequence[int], device: torch.device) -> torch.Tensor:
    """`values` as an index tensor on `device`, copied without waiting for the device."""
    index = torch.tensor(list(values), dtype=torch.long)
    if torch.device(device).type == "cuda":
        index = index.pin_memory()  # a pinned copy is asynchronous; a pageable one syncs the stream
    return index.to(device, non_blocking=True)
