"""Where the tiny model lives: shipped inside the package, or trained once into the user's cache."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from evopress.zoo.checkpoint import is_complete

SHIPPED_TINY = Path(__file__).with_name("tiny")


def cache_dir() -> Path:
    """evopress's cache: $EVOPRESS_CACHE, else $XDG_CACHE_HOME/evopress, else ~/.cache/evopress."""
    if os.environ.get("EVOPRESS_CACHE"):
        return Path(os.environ["EVOPRESS_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "evopress"


def tiny_model_dir(progress: bool = True) -> Path:
    """The tiny preset's model folder: the shipped one, or a cached one trained on first use (minutes)."""
    if is_complete(SHIPPED_TINY):
        return SHIPPED_TINY
    target = cache_dir() / "zoo" / "tiny"
    if is_complete(target):
        return target
    from evopress.zoo.training import train  # torch and transformers load only when training is needed

    target.parent.mkdir(parents=True, exist_ok=True)
    # train beside the target and move it in whole, so a killed run leaves no half folder behind
    scratch = Path(tempfile.mkdtemp(prefix="tiny-", dir=target.parent))
    try:
        train("tiny", scratch, device="cpu", seed=0, progress=progress)
        shutil.rmtree(target, ignore_errors=True)
        os.replace(scratch, target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target
