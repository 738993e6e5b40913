"""ShortGPT depth pruning: remove the blocks that change the hidden state least.

Block Influence (Men et al., "ShortGPT", arXiv 2403.03853), as used as a depth-pruning baseline
by EvoPress (arXiv 2410.14649):

    BI_l = 1 - mean over all tokens t of cos(x_in[t], x_out[t]),

where x_in is the hidden state entering block l and x_out the one it returns, averaged over
every position of every row. The k blocks with the lowest BI are dropped, in one shot.

The states are read with forward hooks on the blocks themselves, so every block, the last one
included, compares its own input with its own output. (The reference reads HF
`output_hidden_states`, whose last entry has the final norm applied.)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from evopress.errors import EvopressError, InfeasibleBudgetError, RecipeError
from evopress.eval.batches import check_tokens
from evopress.eval.forward import last_hidden_state, model_device


@torch.inference_mode()
def block_influence(
    model: torch.nn.Module,
    blocks: list[torch.nn.Module],
    tokens: torch.Tensor,
    batch_size: int = 8,
) -> list[float]:
    """BI_l for each of `blocks` (the model's decoder blocks, in order) on all token rows."""
    check_tokens(tokens)
    if not blocks:
        raise RecipeError("no blocks given; pass the model's decoder blocks in order")
    if batch_size < 1:
        raise RecipeError(f"batch_size must be at least 1, got {batch_size}")
    sums = [0.0] * len(blocks)
    counts = [0] * len(blocks)
    handles = [block.register_forward_hook(_cosine_hook(i, sums, counts), with_kwargs=True)
               for i, block in enumerate(blocks)]
    try:
        for start in range(0, tokens.shape[0], batch_size):
            ids = tokens[start:start + batch_size].to(model_device(model), torch.long)
            last_hidden_state(model, ids)  # runs the blocks; the hooks collect what we need
    finally:
        for handle in handles:
            handle.remove()
    missing = [i for i, c in enumerate(counts) if c == 0]
    if missing:
        raise EvopressError(f"blocks {missing} never ran in the model's forward pass; pass the "
                            "model's own decoder blocks, with none of them skipped")
    return [1.0 - s / c for s, c in zip(sums, counts)]


def _cosine_hook(index: int, sums: list[float], counts: list[int]):
    """A forward hook adding block `index`'s per-token cos(input, output) to `sums`/`counts`."""
    def hook(module, args, kwargs, output):
        x_in = args[0] if args else kwargs.get("hidden_states")
        x_out = output if isinstance(output, torch.Tensor) else output[0]
        if not isinstance(x_in, torch.Tensor) or not isinstance(x_out, torch.Tensor):
            raise EvopressError(f"block {index} was not called with a hidden-state tensor as "
                                "its first argument; pass decoder blocks, not other modules")
        cos = F.cosine_similarity(x_in.float(), x_out.float(), dim=-1)
        sums[index] += float(cos.sum())
        counts[index] += cos.numel()
    return hook


def shortgpt_drop(
    model: torch.nn.Module,
    blocks: list[torch.nn.Module],
    tokens: torch.Tensor,
    k: int,
    batch_size: int = 8,
) -> list[int]:
    """Indices (ascending) of the `k` blocks with the lowest Block Influence; ties go to the
    lower index."""
    if not 0 <= k <= len(blocks):
        raise InfeasibleBudgetError(f"cannot drop {k} of {len(blocks)} blocks; "
                                    f"choose k between 0 and {len(blocks)}")
    return sorted(shortgpt_ranking(model, blocks, tokens, batch_size)[:k])


def shortgpt_ranking(model: torch.nn.Module, blocks: list[torch.nn.Module], tokens: torch.Tensor,
                     batch_size: int = 8) -> list[int]:
    """Every block index, lowest Block Influence (the first to drop) first; ties by index."""
    influence = block_influence(model, blocks, tokens, batch_size)
    return sorted(range(len(blocks)), key=lambda i: (influence[i], i))
