"""Hugging Face data sets by short name, the ones the EvoPress paper reports (arXiv 2410.14649 §5).

`datasets` is optional and imported only here, on first use. Large sets are streamed so that a few
million tokens never require downloading a whole split.
"""

from __future__ import annotations

from evopress.data.split import HELDOUT, TRAIN, split_of
from evopress.errors import DataError, EvopressError

# The shuffle buffer of a streamed set: the seeded order is drawn inside a window this long.
_SHUFFLE_BUFFER = 10_000

_C4_FILES = {
    TRAIN: "en/c4-train.00000-of-01024.json.gz",
    HELDOUT: "en/c4-validation.00000-of-00008.json.gz",
}

HUB_SOURCES = {
    "wikitext2": "Salesforce/wikitext (wikitext-2-raw-v1): train split / test split",
    "c4": "allenai/c4 (en): first train shard / first validation shard, streamed",
    "fineweb-edu": "HuggingFaceFW/fineweb-edu (sample-10BT), streamed: half the rows train, half held-out",
}


def _datasets():
    try:
        import datasets
    except ImportError as exc:
        raise DataError(
            "Hugging Face data sets need the optional `datasets` package: pip install 'evopress[data]' "
            "(or pass a local text file or folder, or 'builtin')"
        ) from exc
    return datasets


def _unreachable(name: str, exc: Exception) -> DataError:
    return DataError(
        f"the data set {name!r} could not be reached ({type(exc).__name__}: {exc}). "
        "If this machine is offline, pass a local text file or folder, or 'builtin'."
    )


def hub_documents(name: str, split: str, seed: int):
    """Yield the documents of data set `name` on side `split`; network failures become DataError."""
    loaders = {"wikitext2": _wikitext2, "c4": _c4, "fineweb-edu": _fineweb_edu}
    datasets = _datasets()
    try:
        yield from loaders[name](datasets, split, seed)
    except EvopressError:
        raise
    except Exception as exc:  # the datasets library raises many types for "no network"
        raise _unreachable(name, exc) from exc


def _wikitext2(datasets, split, seed):
    # The standard protocol keeps the article order and joins lines with blank lines: one document.
    part = "train" if split == TRAIN else "test"
    rows = datasets.load_dataset("Salesforce/wikitext", "wikitext-2-raw-v1", split=part)
    yield "\n\n".join(rows["text"])


def _c4(datasets, split, seed):
    rows = datasets.load_dataset("allenai/c4", data_files={"shard": _C4_FILES[split]}, split="shard", streaming=True)
    for row in rows.shuffle(seed=seed, buffer_size=_SHUFFLE_BUFFER):
        yield row["text"]


def _fineweb_edu(datasets, split, seed):
    """Half the rows are train and half held-out, like the reference's seeded halves.

    The reference shuffles the whole split and cuts it in two; hashing each row's id gives the
    same kind of random halving while streaming, and a row never changes side with the seed.
    """
    rows = datasets.load_dataset("HuggingFaceFW/fineweb-edu", name="sample-10BT", split="train", streaming=True)
    for row in rows.shuffle(seed=seed, buffer_size=_SHUFFLE_BUFFER):
        if split_of(str(row["id"]), fraction=0.5) == split:
            yield row["text"]
