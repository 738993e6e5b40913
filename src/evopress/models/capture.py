"""Capture every block's input and output hidden states with hooks on the decoder layers.

The depth-scoring baselines (ShortGPT block influence, norm ratio, ...; EvoPress §4.1) compare
h_l with h_{l+1}. The reference reads them from `output_hidden_states`, where Hugging Face applies
the final norm to the last entry, so the last block's score compares a raw input with a normed
output. Hooks on the decoder layers see the last block's true, un-normed output.
"""

from __future__ import annotations

import torch


def _hidden(value):
    # Decoder layers return a tensor on transformers 5, a tuple whose first item is it before.
    return value[0] if isinstance(value, (tuple, list)) else value


def _repeat_batch(value, batch: int, times: int):
    """Repeat tensors whose first dimension is the row batch `times` times (candidate stacking).

    Only tensors of two or more dimensions carry a row axis (a 1-d `cache_position` does not)."""
    if isinstance(value, torch.Tensor):
        return value.repeat(times, *([1] * (value.dim() - 1))) if value.dim() > 1 and value.shape[0] == batch else value
    if isinstance(value, tuple):
        return tuple(_repeat_batch(v, batch, times) for v in value)
    return value


@torch.no_grad()
def block_io(adapter, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None):
    """(inputs, outputs): lists with one [batch, seq, hidden] tensor per block.

    Runs only the base model (no LM head). outputs[i] holds the same values as inputs[i + 1]
    (one storage, no copy).
    """
    inputs: list = [None] * adapter.num_blocks
    outputs: list = [None] * adapter.num_blocks
    handles = []

    def watch(index):
        def before(module, args, kwargs):
            inputs[index] = (args[0] if args else kwargs["hidden_states"]).detach()

        def after(module, args, kwargs, output):
            outputs[index] = _hidden(output).detach()

        return before, after

    for index, block in enumerate(adapter.blocks()):
        before, after = watch(index)
        handles.append(block.register_forward_pre_hook(before, with_kwargs=True))
        handles.append(block.register_forward_hook(after, with_kwargs=True))
    try:
        adapter.decoder(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    return inputs, outputs
