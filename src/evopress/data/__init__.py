"""Token sets for calibration and evaluation: the built-in corpus, local text, Hugging Face data sets.

    tokens = load_tokens("builtin", tokenizer, "train", seq_len=256, num_tokens=65536)
"""

from evopress.data.corpus import corpus_files, corpus_texts
from evopress.data.sources import BUILTIN, BUILTIN_SITE, Source, resolve_source
from evopress.data.split import HELDOUT, HELDOUT_FRACTION, SPLITS, TRAIN, normalize_split, split_of
from evopress.data.tokens import describe_source, load_tokens, token_stream

__all__ = [
    "BUILTIN",
    "BUILTIN_SITE",
    "HELDOUT",
    "HELDOUT_FRACTION",
    "SPLITS",
    "Source",
    "TRAIN",
    "corpus_files",
    "corpus_texts",
    "describe_source",
    "load_tokens",
    "normalize_split",
    "resolve_source",
    "split_of",
    "token_stream",
]
