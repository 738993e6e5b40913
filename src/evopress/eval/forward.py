"""Forward passes that yield fp32 logits a few positions at a time.

A causal LM's logits are `T x V` numbers; in fp32 for a 128k vocabulary that is 0.5 MB per
token, so a whole batch of them is never built here. Instead the decoder runs once to the final
hidden states and the output embedding (the LM head) is applied to slices of positions.
Only generic Hugging Face methods are used (`get_decoder`, `get_output_embeddings`); this
assumes logits = head(last hidden state), which holds for the Llama family. Models without a
separate decoder or head fall back to a plain `model(input_ids=...).logits`.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

# fp32 elements per logit slice (256 MiB): big enough for full GPU efficiency on a 128k
# vocabulary (512 positions), small enough to leave room for a few temporaries of that size.
CHUNK_ELEMENTS = 1 << 26


def model_device(model: torch.nn.Module) -> torch.device:
    """Where the model wants its input ids (its first parameter's device)."""
    device = getattr(model, "device", None)
    if isinstance(device, torch.device):
        return device
    return next(model.parameters()).device


def _decoder_and_head(model: torch.nn.Module):
    """The decoder stack and LM head, or (None, None) if the model does not expose them apart."""
    get_decoder = getattr(model, "get_decoder", None)
    get_head = getattr(model, "get_output_embeddings", None)
    if get_decoder is None or get_head is None:
        return None, None
    decoder, head = get_decoder(), get_head()
    if decoder is None or head is None or decoder is model:
        return None, None
    return decoder, head


def last_hidden_state(model: torch.nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
    """Final (normed) hidden states `[b, n, hidden]` without computing logits."""
    decoder, _ = _decoder_and_head(model)
    runner = decoder if decoder is not None else model
    out = runner(input_ids=input_ids, use_cache=False, output_hidden_states=decoder is None)
    if decoder is None:
        return out.hidden_states[-1]
    hidden = getattr(out, "last_hidden_state", None)
    return hidden if hidden is not None else out[0]


def default_chunk_tokens(model: torch.nn.Module) -> int:
    """Positions per logit slice so that one fp32 slice holds about `CHUNK_ELEMENTS` numbers."""
    _, head = _decoder_and_head(model)
    vocab = getattr(head, "out_features", None) or 32768
    return max(1, CHUNK_ELEMENTS // int(vocab))


def logit_chunks(
    model: torch.nn.Module, input_ids: torch.Tensor, chunk_tokens: int | None = None
) -> Iterator[tuple[int, torch.Tensor]]:
    """Yield `(start, logits)` over the `b*n` positions of `input_ids [b, n]`, row-major.

    `logits` is a fresh fp32 `[c, V]` tensor for flat positions `start .. start+c-1` (position
    `i*n + j` is row `i`, position `j`); callers may modify it in place.
    """
    chunk = chunk_tokens or default_chunk_tokens(model)
    decoder, head = _decoder_and_head(model)
    if decoder is None:
        logits = model(input_ids=input_ids, use_cache=False).logits.flatten(0, 1)
        for start in range(0, logits.shape[0], chunk):
            yield start, _fresh_fp32(logits[start:start + chunk])
        return
    flat = last_hidden_state(model, input_ids).flatten(0, 1)
    for start in range(0, flat.shape[0], chunk):
        # the head's output is already a new tensor, so no copy is needed when it is fp32
        logits = head(flat[start:start + chunk])
        yield start, logits if logits.dtype == torch.float32 else logits.float()


def _fresh_fp32(x: torch.Tensor) -> torch.Tensor:
    """An fp32 copy of `x` that does not share memory with it."""
    return x.clone() if x.dtype == torch.float32 else x.float()
