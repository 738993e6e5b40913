"""Append-only JSONL journal: every evaluation and generation of a search, one line each.

The journal is the search's memory. On restart the search replays from the start with the same
seed; every evaluation already in the journal is answered from it instead of the model, so a
killed search resumes to exactly the result of an uninterrupted one. A stage's results are
written in one line after the whole stage is scored, so a stage is either fully recorded or
re-run as a whole. A line cut short by a kill is dropped on open.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

from evopress.errors import JournalError
from evopress.search.fidelity import Fidelity
from evopress.search.space import Genome

VERSION = 1


def _normal(obj: Any) -> Any:
    return json.loads(json.dumps(obj))


class Journal:
    def __init__(self, path: str | Path | None, header: dict):
        self.path = Path(path) if path is not None else None
        self.header = _normal({"type": "header", "version": VERSION, **header})
        self.memo: dict[tuple[int, int, int, Genome], float] = {}
        self.records: dict[tuple, dict] = {}
        self.replayed = 0
        if self.path is not None and self.path.exists() and self.path.stat().st_size:
            self._load()
        else:
            self._append(self.header)

    def _load(self) -> None:
        raw = self.path.read_bytes()
        complete = raw[: raw.rfind(b"\n") + 1]
        if len(complete) != len(raw):  # a kill mid-write: drop the partial line
            with open(self.path, "r+b") as f:
                f.truncate(len(complete))
        lines = complete.decode().splitlines()
        try:
            entries = [json.loads(line) for line in lines]
        except json.JSONDecodeError as e:
            raise JournalError(f"{self.path} is corrupt ({e}); move it away to start afresh") from e
        if not entries or entries[0] != self.header:
            raise JournalError(
                f"{self.path} belongs to a different search (model, data, space or settings differ); "
                "use another run directory, or delete it to start afresh")
        for entry in entries[1:]:
            self._index(entry)

    def _index(self, entry: dict) -> None:
        if entry["type"] == "eval":
            for genome, value in zip(entry["genomes"], entry["fitness"]):
                self.memo[(entry["tokens"], entry["draw"], entry.get("train_tokens", 0), tuple(genome))] = value
        elif "key" in entry:
            self.records[tuple(entry["key"])] = entry

    def _append(self, entry: dict) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(json.dumps(entry) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def evaluate(self, objective: Callable, genomes: list[Genome], fidelity: Fidelity,
                 **tag: Any) -> list[float]:
        """Fitness of `genomes` at `fidelity`, from the journal when known, else from `objective`."""
        f = fidelity
        known = [self.memo.get((f.tokens, f.draw, f.train_tokens, g)) for g in genomes]
        if all(v is not None for v in known):
            self.replayed += len(genomes)
            return known
        values = [float(v) for v in objective(genomes, fidelity)]
        entry = {"type": "eval", **tag, "tokens": f.tokens, "draw": f.draw,
                 **({"train_tokens": f.train_tokens} if f.train_tokens else {}),
                 "genomes": [list(g) for g in genomes], "fitness": values}
        self._append(entry)
        self._index(entry)
        return values

    def record(self, key: tuple, **fields: Any) -> dict:
        """Write a keyed record once; on replay return the stored one (its timings are the originals)."""
        key = tuple(_normal(list(key)))
        if key in self.records:
            return self.records[key]
        entry = _normal({"type": "record", "key": list(key), **fields})
        self._append(entry)
        self._index(entry)
        return entry
