"""Progress bars for the long steps (database, teacher targets, held-out evaluation).

Shown on a terminal only, so logs, pipes and CI stay line-oriented (`EVOPRESS_PROGRESS=1` or `0`
forces them on or off). The per-generation line of the search is a log line, not a bar.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable


def shown() -> bool:
    forced = os.environ.get("EVOPRESS_PROGRESS")
    return forced == "1" if forced in ("0", "1") else sys.stderr.isatty()


def bar(items: Iterable, desc: str, total: int | None = None, unit: str = "it"):
    """`items`, iterated under a bar named `desc` (an empty `desc`: no bar)."""
    if not desc or not shown():
        return items
    from tqdm import tqdm

    return tqdm(items, desc=desc, total=total, unit=unit, leave=False, dynamic_ncols=True)
