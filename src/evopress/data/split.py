"""The train / held-out rule: a document's side depends only on a stable name for it.

Hashing the name (a path relative to its root, or a row id) instead of drawing random numbers
makes the split identical on every machine and for every seed, so a file used to calibrate or
train is never the one used to evaluate. The seed only orders documents inside a side.
"""

from __future__ import annotations

import hashlib

from evopress.errors import DataError

TRAIN = "train"
HELDOUT = "heldout"
SPLITS = (TRAIN, HELDOUT)

# About one file in twenty is held out: enough text to measure perplexity, little lost for training.
HELDOUT_FRACTION = 0.05

# Names other tools use for the same two sides.
_ALIASES = {
    "train": TRAIN,
    "calibration": TRAIN,
    "heldout": HELDOUT,
    "held-out": HELDOUT,
    "held_out": HELDOUT,
    "eval": HELDOUT,
    "test": HELDOUT,
    "validation": HELDOUT,
}


def normalize_split(split: str) -> str:
    """Map a split name to "train" or "heldout"; anything else is an error that lists both."""
    key = str(split).strip().lower()
    if key not in _ALIASES:
        raise DataError(f"unknown split {split!r}: use 'train' or 'heldout'")
    return _ALIASES[key]


def hash_unit(key: str) -> float:
    """A number in [0, 1) that depends only on `key` (sha1, so no interpreter salt)."""
    digest = hashlib.sha1(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def split_of(key: str, fraction: float = HELDOUT_FRACTION) -> str:
    """The side the document named `key` belongs to: held-out iff its hash falls below `fraction`."""
    return HELDOUT if hash_unit(key) < fraction else TRAIN
