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
