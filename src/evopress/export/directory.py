"""An export directory is written beside its destination and renamed into place when complete.

A crash half-way leaves no half-written model where a loader would find it. An existing directory
is only replaced when it is an earlier evopress export (it holds the plan file), never a folder
that happens to have the same name. The finished directory gets the mode `mkdir` would give it
(0o777 less the umask), not the private 0o700 of a temporary directory.
"""

from __future__ import annotations

import json

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from evopress.errors import ExportError

PLAN_FILE = "evopress_plan.json"


def _check_target(out_dir: Path, overwrite: bool) -> None:
    if not out_dir.exists() or (out_dir.is_dir() and not any(out_dir.iterdir())):
        return
    if not out_dir.is_dir():
        raise ExportError(f"{out_dir} is a file; choose a directory path for the export")
    if not overwrite:
        raise ExportError(
            f"{out_dir} already exists and is not empty; choose a new directory or pass overwrite=True"
        )
    if not (out_dir / PLAN_FILE).is_file():
        raise ExportError(
            f"{out_dir} is not an earlier evopress export (no {PLAN_FILE}); refusing to replace it, "
            "choose a new directory"
        )


def _mkdir_mode() -> int:
    """0o777 less the process umask: what `mkdir` gives, so others can read an export as usual.

    The umask can only be read by setting it; it is put back at once.
    """
    umask = os.umask(0o077)
    os.umask(umask)
    return 0o777 & ~umask


@contextmanager
def staged(out_dir, overwrite: bool = False):
    """Yield a scratch directory; on success it becomes `out_dir`, on error it is removed."""
    out_dir = Path(out_dir).expanduser().resolve()
    _check_target(out_dir, overwrite)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        yield scratch
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    scratch.chmod(_mkdir_mode())  # mkdtemp's 0o700 kept it private while half-written
    if out_dir.exists():
        shutil.rmtree(out_dir)
    scratch.rename(out_dir)


def bytes_on_disk(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def tensor_bytes(path: Path) -> int:
    """Bytes of tensor data in the directory's safetensors files, read from their headers."""
    total = 0
    for f in sorted(Path(path).glob("*.safetensors")):
        with open(f, "rb") as fh:
            header = json.loads(fh.read(int.from_bytes(fh.read(8), "little")))
        total += sum(end - start for key, entry in header.items() if key != "__metadata__"
                     for start, end in [entry["data_offsets"]])
    return total
