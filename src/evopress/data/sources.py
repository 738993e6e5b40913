"""What a `source` string names: the built-in corpus, a local file or folder, or a hub data set.

Short names win over paths, so a folder called "c4" is passed as "./c4".
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path

from evopress.data.corpus import corpus_texts
from evopress.data.hub import HUB_SOURCES, hub_documents
from evopress.data.local import TRAIN_FRACTION, dir_documents, file_documents
from evopress.data.split import HELDOUT_FRACTION
from evopress.errors import DataError

BUILTIN = "builtin"
BUILTIN_SITE = "builtin+site-packages"


@dataclass(frozen=True)
class Source:
    """A resolved source: `kind` is "builtin", "file", "dir" or "hub"; `where` is the name or path."""

    kind: str
    where: str
    site_packages: bool = False

    def documents(self, split: str, seed: int):
        """Yield the texts on side `split` ("train" or "heldout"), in the order `seed` gives."""
        if self.kind == "builtin":
            return corpus_texts(split, self.site_packages, seed)
        if self.kind == "file":
            return file_documents(Path(self.where), split)
        if self.kind == "dir":
            return dir_documents(Path(self.where), split, seed)
        return hub_documents(self.where, split, seed)

    def describe(self) -> dict:
        """Plain data naming the text exactly enough to reproduce a measurement."""
        info = {"kind": self.kind, "where": self.where}
        if self.kind in ("builtin", "dir"):
            info["split_rule"] = (
                f"a file is held out iff int(sha1(key)[:8]) / 2**64 < {HELDOUT_FRACTION}; key = its path relative "
                "to the root (prefixed 'stdlib/' or 'site-packages/' for the built-in corpus)"
            )
        if self.kind == "builtin":
            info["python"] = platform.python_version()
            info["site_packages"] = self.site_packages
        elif self.kind == "file":
            info["split_rule"] = f"first {TRAIN_FRACTION:.0%} of the characters train, the rest held-out"
        elif self.kind == "hub":
            info["split_rule"] = HUB_SOURCES[self.where]
        return info


def resolve_source(source) -> Source:
    """Turn a source string or path into a `Source`, or say which sources exist."""
    if isinstance(source, Source):
        return source
    name = str(source)
    if name in (BUILTIN, BUILTIN_SITE):
        return Source("builtin", name, site_packages=name == BUILTIN_SITE)
    if name in HUB_SOURCES:
        return Source("hub", name)
    path = Path(name).expanduser()
    if path.is_file():
        return Source("file", str(path.resolve()))
    if path.is_dir():
        return Source("dir", str(path.resolve()))
    known = ", ".join([BUILTIN, BUILTIN_SITE, *HUB_SOURCES])
    raise DataError(f"data source {name!r} is neither an existing file or folder nor one of: {known}")
