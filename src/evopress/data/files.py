"""Walking a folder of text files and reading them safely, in an order that never depends on the OS."""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path

from evopress.data.split import split_of

# One generated file (for example pydoc's topic table) must not dominate a token budget.
MAX_FILE_CHARS = 200_000


@dataclass(frozen=True)
class TextFile:
    """A file and its stable name: the path relative to its root, with "/" separators."""

    key: str
    path: Path


def walk_files(root: Path, suffix: str | None = None, skip_dirs=(), prefix: str = "") -> list[TextFile]:
    """Every regular file under `root` (hidden entries and `skip_dirs` left out), sorted by key.

    `prefix` goes in front of each key so that files of different roots never share a name.
    """
    root = Path(root)
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".") and d not in skip_dirs]
        for name in filenames:
            if name.startswith(".") or (suffix is not None and not name.endswith(suffix)):
                continue
            path = Path(dirpath, name)
            if path.is_file():
                rel = path.relative_to(root).as_posix()
                found.append(TextFile(prefix + rel, path))
    found.sort(key=lambda f: f.key)
    return found


def select_split(files: list[TextFile], split: str, seed: int) -> list[TextFile]:
    """The files on side `split`, sorted then shuffled with `seed` (the same order everywhere)."""
    chosen = sorted((f for f in files if split_of(f.key) == split), key=lambda f: f.key)
    random.Random(seed).shuffle(chosen)
    return chosen


def read_text(path: Path, max_chars: int = MAX_FILE_CHARS) -> str | None:
    """The file's UTF-8 text, cut at a line end near `max_chars`; None if unreadable or binary."""
    try:
        raw = Path(path).read_bytes()
    except OSError:
        return None
    if b"\x00" in raw:
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    text = text.removeprefix("\ufeff")
    if len(text) > max_chars:
        cut = text.rfind("\n", 0, max_chars)
        text = text[: cut + 1 if cut > 0 else max_chars]
    return text


def iter_texts(files: list[TextFile], max_chars: int = MAX_FILE_CHARS):
    """Yield the non-empty texts of `files` in order, reading each only when it is needed."""
    for f in files:
        text = read_text(f.path, max_chars)
        if text and text.strip():
            yield text
