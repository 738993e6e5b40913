"""Where zoo models live: tiny ships inside the package; other presets train once into the user's cache."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

from evopress.zoo.checkpoint import is_complete
from evopress.zoo.presets import get_preset

SHIPPED_TINY = Path(__file__).with_name("tiny")


def cache_dir() -> Path:
    """evopress's cache: $EVOPRESS_CACHE, else $XDG_CACHE_HOME/evopress, else ~/.cache/evopress."""
    if os.environ.get("EVOPRESS_CACHE"):
        return Path(os.environ["EVOPRESS_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "evopress"


def zoo_model_dir(name: str, progress: bool = True) -> Path:
    """A zoo preset's model folder: tiny's shipped one, else a cached one trained on CPU on first use.

    CPU training with a fixed seed is bitwise reproducible, so every machine's cached copy is the
    same model; training takes minutes, and happens only when the cache has no finished folder.
    """
    name = get_preset(name).name  # an unknown name fails here, listing the known ones
    if name == "tiny" and is_complete(SHIPPED_TINY):
        return SHIPPED_TINY
    target = cache_dir() / "zoo" / name
    if not is_complete(target):
        with _lock(cache_dir() / "locks" / f"zoo-{name}"):  # another process may be training it right now
            if not is_complete(target):
                _train_into(name, target, progress)
    return target


@contextlib.contextmanager
def _lock(path: Path):
    """An exclusive lock on `path` (waits for the holder; released when the holder exits, even killed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # Windows: no lock; two processes may each train (the same bytes)
        yield
        return
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def tiny_model_dir(progress: bool = True) -> Path:
    """The tiny preset's model folder: the shipped one, or a cached one trained on first use (minutes)."""
    return zoo_model_dir("tiny", progress)


def _train_into(name: str, target: Path, progress: bool) -> None:
    """Train preset `name` beside `target` and move it in whole, so a killed run leaves no half folder."""
    from evopress.zoo.training import train  # torch and transformers load only when training is needed

    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=target.parent))
    scratch.chmod(0o755)  # mkdtemp makes it private; a model folder is for anyone to read
    try:
        train(name, scratch, device="cpu", seed=0, progress=progress)
        shutil.rmtree(target, ignore_errors=True)
        os.replace(scratch, target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
