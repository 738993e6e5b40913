"""The built-in corpus: the Python source files of the running interpreter's standard library.

Every Python installation carries this text, so models can be trained and evaluated with no
download. Site-packages adds far more text on machines that have it (the benchmark preset uses it).
Files are split into train / held-out by a hash of their name (see `split.py`), so the two sides
never share a file and each file stays on its side on every machine.
"""

from __future__ import annotations

import sysconfig
from pathlib import Path

from evopress.data.files import MAX_FILE_CHARS, TextFile, iter_texts, select_split, walk_files
from evopress.data.split import normalize_split

# Installed packages and caches live inside the stdlib folder on most layouts; they are not stdlib.
_NOT_STDLIB = ("site-packages", "dist-packages", "__pycache__")


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def site_packages_roots() -> list[Path]:
    """The pure and platform package folders, once each (they are often the same folder)."""
    paths = sysconfig.get_paths()
    roots = []
    for key in ("purelib", "platlib"):
        root = Path(paths[key])
        if root.is_dir() and root not in roots:
            roots.append(root)
    return roots


def all_corpus_files(site_packages: bool = False) -> list[TextFile]:
    """Every *.py file of the corpus, keyed "stdlib/<rel>" or "site-packages/<rel>", sorted."""
    files = walk_files(stdlib_root(), ".py", _NOT_STDLIB, prefix="stdlib/")
    if site_packages:
        seen = set()
        for root in site_packages_roots():
            for f in walk_files(root, ".py", ("__pycache__",), prefix="site-packages/"):
                if f.key not in seen:
                    seen.add(f.key)
                    files.append(f)
    return files


def corpus_files(split: str, site_packages: bool = False, seed: int = 0) -> list[TextFile]:
    """The corpus files on one side of the split, in the seeded order."""
    return select_split(all_corpus_files(site_packages), normalize_split(split), seed)


def corpus_texts(split: str, site_packages: bool = False, seed: int = 0, max_chars: int = MAX_FILE_CHARS):
    """Yield the texts of `corpus_files(...)`, skipping unreadable or non-UTF-8 files."""
    return iter_texts(corpus_files(split, site_packages, seed), max_chars)
