"""What an experiment hands back: a table, headline figures, the claims it checked, and files.

`Report.table()` is the text the CLI prints; `Report.save(out_dir, plot)` writes `<name>.json`
(settings, rows, summary, checks, seconds) and `<name>.png` (the experiment's plot, drawn with
matplotlib's Agg backend so it works without a display).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable


@dataclass
class Report:
    name: str
    title: str
    columns: list[str]
    rows: list[dict]
    summary: dict = field(default_factory=dict)  # headline figures: fitted exponents, ratios
    checks: dict[str, bool] = field(default_factory=dict)  # each qualitative claim and whether it held
    settings: dict = field(default_factory=dict)
    seconds: float = 0.0
    digits: int = 4  # significant digits in the printed table

    @property
    def passed(self) -> bool:
        return all(self.checks.values())

    def table(self) -> str:
        cells = [[_fmt(row.get(c), self.digits) for c in self.columns] for row in self.rows]
        widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(self.columns)]
        lines = [self.title, "  ".join(c.rjust(w) for c, w in zip(self.columns, widths)),
                 "  ".join("-" * w for w in widths)]
        lines += ["  ".join(v.rjust(w) for v, w in zip(r, widths)) for r in cells]
        if self.summary:
            lines.append("")
            lines += [f"{key}: {_fmt(value)}" for key, value in self.summary.items()]
        if self.checks:
            lines.append("")
            lines += [f"[{'ok' if held else 'FAILED'}] {claim}" for claim, held in self.checks.items()]
        lines.append(f"\n{self.name}: {self.seconds:.1f} s")
        return "\n".join(lines)

    def to_json(self) -> dict:
        return _clean(asdict(self))

    def save(self, out_dir: str | Path, plot: Callable[["Report"], object] | None = None) -> list[Path]:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = [out / f"{self.name}.json"]
        paths[0].write_text(json.dumps(self.to_json(), indent=1) + "\n")
        if plot is not None:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt

            figure = plot(self)
            paths.append(out / f"{self.name}.png")
            figure.savefig(paths[1], dpi=120, bbox_inches="tight")
            plt.close(figure)
        return paths


def _fmt(value, digits: int = 4) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_fmt(v, digits) for v in value) + "]"
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        if math.isinf(value):
            return "censored" if value > 0 else "-inf"
        return f"{value:.{digits}g}" if abs(value) < 10**max(5, digits) else f"{value:.{digits - 1}e}"
    return str(value)


def _clean(value):
    """JSON has no inf or nan: write them as strings, and numpy scalars as Python numbers."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value
