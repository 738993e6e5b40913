"""Append one benchmark run's figures to bench/RESULTS.md (old rows stay; new ones go below)."""

from __future__ import annotations

import datetime
import json
import os
import subprocess
from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")


def commit() -> str:
    """$EVOPRESS_COMMIT if set (a copied tree, whose git may be stale), else the checkout's short commit."""
    if os.environ.get("EVOPRESS_COMMIT"):
        return os.environ["EVOPRESS_COMMIT"]
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              check=True, cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


class Figures(dict):
    """A run's figures: `figures(name, value)` keeps one and prints it as a JSON line at once (a run
    stopped half-way still shows what it measured)."""

    def __call__(self, name: str, value) -> None:
        self[name] = value
        print(json.dumps({"figure": name, "value": value}), flush=True)


def block_seconds(lines: list[str]) -> float:
    """Seconds of block work in a database build's log lines ("block 3/16 in 1.2s")."""
    import re

    return sum(float(m.group(1)) for line in lines for m in [re.search(r"block \d+/\d+ in ([0-9.]+)s", line)] if m)


def device() -> str:
    import torch

    if not torch.cuda.is_available():
        return "cpu"
    return f"{torch.cuda.device_count()}x {torch.cuda.get_device_name()}, torch {torch.__version__}"


def append(title: str, command: str, figures: dict, path: str | os.PathLike = RESULTS) -> None:
    """A table of `figures` under a heading naming the workload, command, commit, date and machine."""
    date = datetime.date.today().isoformat()
    lines = [f"\n### {title}: `{command}` ({commit()}, {date}, {device()})\n", "| figure | value |", "|---|---|"]
    lines += [f"| {name} | {json.dumps(value) if not isinstance(value, str) else value} |"
              for name, value in figures.items()]
    with open(path, "a") as f:
        f.write("\n".join(lines) + "\n")
