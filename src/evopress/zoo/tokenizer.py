"""A byte-level BPE tokenizer trained on the corpus with the `tokenizers` library.

Byte-level BPE (as in GPT-2 and Llama 3) covers any text with no unknown token. Only two special
tokens exist, and they are spelled so that no Python source contains them.
"""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

BOS = "<|zoo_bos|>"
EOS = "<|zoo_eos|>"


def take_chars(texts, max_chars: int):
    """Yield texts in order until `max_chars` characters have been given (the last one whole)."""
    seen = 0
    for text in texts:
        if seen >= max_chars:
            return
        seen += len(text)
        yield text


def train_tokenizer(texts, vocab_size: int) -> PreTrainedTokenizerFast:
    """Learn `vocab_size` tokens (bytes, merges and the two specials) from `texts`.

    Token ids: 0 is BOS, 1 is EOS, then the 256 bytes, then merges, so ids do not depend on the text.
    """
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[BOS, EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token=BOS, eos_token=EOS, model_max_length=1 << 30)
