"""64-bit hashing for frozen noise, random rankings and duplicate checks."""

from __future__ import annotations

import numpy as np

__all__ = ["splitmix64"]


def splitmix64(h: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser on uint64 arrays: nearby inputs give independent-looking outputs."""
    with np.errstate(over="ignore"):
        h = h + np.uint64(0x9E3779B97F4A7C15)
        h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return h ^ (h >> np.uint64(31))
