"""Stand-ins for dropped sublayers: they add exactly zero to the residual stream.

EvoPress removes an attention or MLP sublayer by making it output zero (§2.8, arXiv 2410.14649),
so `residual + sublayer(norm(x))` becomes `residual`. The stand-ins are swapped into the installed
transformers decoder layer in place of the real modules; the decoder layer's own forward code runs
unchanged, which is why this keeps working across transformers releases.
"""

from __future__ import annotations

import torch
from torch import nn


def _zeros_like(x: torch.Tensor) -> torch.Tensor:
    # A zero-stride view: the right shape for the residual add, with no memory and no memset.
    return x.new_zeros(()).expand_as(x)


class _Anchor(nn.Module):
    """Remembers where the replaced module lived, so restoring follows later `model.to(...)` moves.

    The anchor is a non-persistent scalar buffer: `model.to()` moves and casts it with the rest
    of the model, and it never shows up in a state dict.
    """

    def __init__(self, like: nn.Module):
        super().__init__()
        ref = next(iter(like.parameters()), None)
        anchor = torch.zeros((), dtype=ref.dtype, device=ref.device) if ref is not None else torch.zeros(())
        self.register_buffer("anchor", anchor, persistent=False)

    def place(self, module: nn.Module) -> nn.Module:
        """Move `module` to the anchor's device (and floating dtype) if the model moved meanwhile."""
        ref = next(iter(module.parameters()), None)
        if ref is None:
            return module
        if ref.device != self.anchor.device or (ref.is_floating_point() and ref.dtype != self.anchor.dtype):
            module.to(device=self.anchor.device, dtype=self.anchor.dtype)
        return module


class ZeroMLP(_Anchor):
    """A dropped MLP: returns zeros shaped like its input."""

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        return _zeros_like(hidden_states)


class ZeroAttention(_Anchor):
    """A dropped attention sublayer: returns `(zeros, None)`, as the decoder layer unpacks two values.

    It still writes its layer's slot of the KV cache, with one-element key/value vectors per token.
    The model derives positions and mask sizes from `cache.get_seq_length()` (layer 0 by default),
    so an untouched slot would restart positions at 0 during `generate()` whenever block 0's
    attention is dropped.
    """

    def __init__(self, like: nn.Module, layer_idx: int):
        super().__init__(like)
        self.layer_idx = layer_idx

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs):
        # The cache's keyword: `cache` in newer transformers (5.24), `past_key_values` (or the older
        # `past_key_value`) before; without it, positions silently restart at every decoding step.
        cache = next((kwargs[k] for k in ("cache", "past_key_values", "past_key_value") if kwargs.get(k) is not None),
                     None)
        if cache is not None:
            batch, seq = hidden_states.shape[0], hidden_states.shape[1]
            stub = hidden_states.new_zeros((batch, 1, seq, 1))
            cache.update(stub, stub, self.layer_idx)
        return _zeros_like(hidden_states), None
