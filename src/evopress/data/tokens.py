"""Token sets: documents joined by the tokenizer's end-of-sequence token, cut into windows.

Windows do not overlap and are taken from the start of the seeded document order, so a token set
is fixed by (source, split, seq_len, number of windows, seed, tokenizer). As in the EvoPress
reference (arXiv 2410.14649), no BOS token is added to windows.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from evopress.data.sources import resolve_source
from evopress.data.split import normalize_split
from evopress.errors import DataError

# Documents are tokenized this many at a time: large enough to batch, small enough to stop early.
_DOCS_PER_BATCH = 64


def _separator(tokenizer) -> list[int]:
    sep = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.bos_token_id
    return [] if sep is None else [int(sep)]


def token_stream(documents, tokenizer, max_tokens: int | None = None) -> np.ndarray:
    """Tokenize documents in order with a separator between them; stop once `max_tokens` are in."""
    sep = _separator(tokenizer)
    parts, total, batch = [], 0, []

    def flush():
        nonlocal total
        encoded = tokenizer(batch, add_special_tokens=False, verbose=False)["input_ids"]
        for ids in encoded:
            piece = (sep if parts else []) + list(ids)
            parts.append(np.asarray(piece, dtype=np.int64))
            total += len(piece)
        batch.clear()

    for doc in documents:
        batch.append(doc)
        if len(batch) == _DOCS_PER_BATCH:
            flush()
            if max_tokens is not None and total >= max_tokens:
                break
    if batch:
        flush()
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def load_tokens(source, tokenizer, split: str, seq_len: int, num_tokens: int | None, seed: int = 0) -> torch.Tensor:
    """Return a LongTensor [n_seq, seq_len] of non-overlapping windows from `source`'s `split`.

    `num_tokens // seq_len` windows are taken (None: every full window there is). Fewer are
    returned, with a warning, if the source runs out; none at all is a DataError.
    """
    split = normalize_split(split)
    if seq_len < 1:
        raise DataError(f"seq_len must be at least 1, got {seq_len}")
    wanted = None if num_tokens is None else num_tokens // seq_len
    if wanted is not None and wanted < 1:
        raise DataError(
            f"num_tokens={num_tokens} is less than one sequence of seq_len={seq_len}: ask for at least {seq_len}"
        )
    src = resolve_source(source)
    ids = token_stream(src.documents(split, seed), tokenizer, None if wanted is None else wanted * seq_len)
    n_seq = len(ids) // seq_len
    if n_seq == 0:
        raise DataError(
            f"data source {src.where!r} ({split}) gave {len(ids)} tokens, fewer than one sequence of {seq_len}: "
            "pass more text or a shorter seq_len"
        )
    if wanted is not None:
        if n_seq < wanted:
            warnings.warn(
                f"data source {src.where!r} ({split}) has only {n_seq} of the {wanted} sequences "
                f"of {seq_len} tokens asked for",
                stacklevel=2,
            )
        n_seq = min(n_seq, wanted)
    return torch.from_numpy(ids[: n_seq * seq_len].copy()).view(n_seq, seq_len)


def describe_source(source, split: str, seq_len: int, n_seq: int, seed: int = 0) -> dict:
    """The data protocol of a token set, as plain data for run reports."""
    src = resolve_source(source)
    return {
        "source": str(source),
        **src.describe(),
        "split": normalize_split(split),
        "seq_len": int(seq_len),
        "n_seq": int(n_seq),
        "num_tokens": int(seq_len) * int(n_seq),
        "seed": int(seed),
        "separator": "eos between documents, no bos",
    }
