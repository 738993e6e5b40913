"""Local text: one file split by position, or a folder of files split by file name.

A single file has no smaller named parts, so its first 90% (cut at a line end) is train and the
rest is held-out. A folder uses the same hashed-name rule as the built-in corpus.
"""

from __future__ import annotations

from pathlib import Path

from evopress.data.files import iter_texts, read_text, select_split, walk_files
from evopress.data.split import HELDOUT_FRACTION, TRAIN
from evopress.errors import DataError

TRAIN_FRACTION = 0.9

# A local file is the user's own data: read it whole rather than with the corpus's per-file cap.
_NO_CAP = 1 << 62


def split_text(text: str, split: str) -> str:
    """The train head or held-out tail of `text`; the cut is the first line end after 90%."""
    cut = int(len(text) * TRAIN_FRACTION)
    newline = text.find("\n", cut)
    if newline != -1:
        cut = newline + 1
    return text[:cut] if split == TRAIN else text[cut:]


def file_documents(path: Path, split: str):
    """Yield the one document of a text file's side of the split."""
    text = read_text(path, _NO_CAP)
    if text is None:
        raise DataError(f"{path} is not a readable UTF-8 text file: pass a text file, a folder of them, or 'builtin'")
    part = split_text(text, split)
    if part.strip():
        yield part


def dir_documents(root: Path, split: str, seed: int):
    """Yield the texts of a folder's files on side `split`, in the seeded order."""
    files = walk_files(root)
    if not files:
        raise DataError(f"folder {root} has no files: put text files in it or pass 'builtin'")
    chosen = select_split(files, split, seed)
    if not chosen:
        raise DataError(
            f"none of the {len(files)} files in {root} falls on the {split!r} side (a hash of each file's name "
            f"holds out about {HELDOUT_FRACTION:.0%} of them): add more files, or pass a single file, "
            "which is split 90/10 by position"
        )
    yield from iter_texts(chosen, _NO_CAP)
