"""The run directory: one schema for every method, written atomically, owned by one process at a time.

    config.yaml     every setting of the run (a valid recipe; the model as an absolute path)
    journal.jsonl   every evaluation and generation (the search resumes from it)
    plans.json      every method's genome, readable per-unit levels, fitness, held-out ppl;
                    the steps done, and the config they were done with
    result.json     plans, timings, protocol, versions, export (numbers as numbers)
    summary.txt     the final table;  profile.png, convergence.png;  model/  the export
    .lock           held while a process works here (who holds it, since when)
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from contextlib import contextmanager
from pathlib import Path

import yaml

from evopress.errors import EvopressError, RecipeError

SCHEMA = 2  # 1: a depth-only plan.json and per-method files


class RunDirBusyError(EvopressError):
    """Another process works in this run directory."""


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


class RunDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    @property
    def model(self) -> Path:
        return self.path / "model"

    @contextmanager
    def lock(self):
        """Hold the directory's lock; another holder is a clear error naming it."""
        self.path.mkdir(parents=True, exist_ok=True)
        f = open(self.path / ".lock", "a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            f.close()
            raise RunDirBusyError(f"{self.path} is in use by {holder}; wait for it to finish, or use another "
                                  "--run-dir") from None
        f.truncate(0)
        f.write(f"process {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        f.flush()
        try:
            yield self
        finally:
            f.truncate(0)
            fcntl.flock(f, fcntl.LOCK_UN)
            f.close()

    def write_config(self, recipe: dict) -> None:
        write_atomic(self.path / "config.yaml", yaml.safe_dump(recipe, sort_keys=False))

    def read_config(self) -> dict:
        path = self.path / "config.yaml"
        if not path.is_file():
            raise RecipeError(f"{self.path} is not a run directory (no config.yaml); pass the --run-dir of "
                              "an evopress run")
        return yaml.safe_load(path.read_text())

    def plans(self) -> dict:
        """plans.json: {"version", "config", "done": [steps], "plans": {name: record}, "dense": {...}}."""
        path = self.path / "plans.json"
        if not path.is_file():
            return {"version": SCHEMA, "config": None, "done": [], "plans": {}, "dense": {}}
        data = json.loads(path.read_text())
        if data.get("version") != SCHEMA:
            raise RecipeError(f"{path} was written by another evopress version (schema {data.get('version')}, "
                              f"this one reads {SCHEMA}); rerun in a new --run-dir")
        return data

    def save_plans(self, data: dict) -> None:
        write_atomic(self.path / "plans.json", json.dumps(data, indent=1))

    def write(self, name: str, text: str) -> None:
        write_atomic(self.path / name, text)
