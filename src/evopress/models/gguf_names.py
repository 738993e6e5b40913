"""Hugging Face Llama-family tensor names -> llama.cpp GGUF tensor names.

The GGUF writer (`evopress.export.gguf`) must not know Hugging Face module names, so the table
lives here. llama.cpp's `llama` architecture names one block's tensors `blk.N.<short>`, and the
model-wide ones `token_embd`, `output_norm` and `output`.

Two of the names need more than a rename: HF applies rotary embeddings to the two halves of each
head (`rotate_half`), llama.cpp to adjacent pairs, so llama.cpp's converter reorders the rows of
the query and key projections inside every head. `rope_heads(key)` says which head count that
reorder runs over ("heads" for queries, "kv_heads" for keys, as in `Geometry`); the row
order itself is llama.cpp layout, computed by the writer.
"""

from __future__ import annotations

from evopress.errors import ExportError
from evopress.models.llama import LAYOUT

# Tensors outside the decoder blocks.
MODEL_TENSORS = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}
OUTPUT_PROJECTION = "lm_head.weight"  # absent from the file when tied to the embedding

# Modules inside block N -> llama.cpp's short name, and the head count its rows are reordered over.
BLOCK_MODULES = {
    "input_layernorm": ("attn_norm", None),
    "self_attn.q_proj": ("attn_q", "heads"),
    "self_attn.k_proj": ("attn_k", "kv_heads"),
    "self_attn.v_proj": ("attn_v", None),
    "self_attn.o_proj": ("attn_output", None),
    "post_attention_layernorm": ("ffn_norm", None),
    "mlp.gate_proj": ("ffn_gate", None),
    "mlp.up_proj": ("ffn_up", None),
    "mlp.down_proj": ("ffn_down", None),
}
NORMS = ("input_layernorm", "post_attention_layernorm")
# llama.cpp's `llama` architecture loads optional biases of every linear layer (Qwen2 has q/k/v).
LINEAR_PARAMS = ("weight", "bias")


def _block_entry(key: str) -> tuple[str, str | None] | None:
    """(GGUF name, rope head tag) of a block tensor llama.cpp knows, else None."""
    split = LAYOUT.split(key)
    if split is None:
        return None
    block, rest = split
    module, _, param = rest.rpartition(".")
    if module not in BLOCK_MODULES or param not in (("weight",) if module in NORMS else LINEAR_PARAMS):
        return None
    short, heads = BLOCK_MODULES[module]
    return f"blk.{block}.{short}.{param}", heads


def gguf_name(key: str) -> str:
    """The GGUF name of HF state key `key`; an ExportError for a tensor llama.cpp's `llama` has no slot for."""
    if key in MODEL_TENSORS:
        return MODEL_TENSORS[key]
    entry = _block_entry(key)
    if entry is None:
        raise ExportError(
            f"tensor {key!r} has no place in a llama.cpp 'llama' GGUF file (known: embeddings, final norm, "
            "LM head, and per block the q/k/v/o and gate/up/down projections with their biases and the two "
            "norms); models with other tensors (e.g. Qwen3's q/k norms) cannot be exported to GGUF here"
        )
    return entry[0]


def rope_heads(key: str) -> str | None:
    """Which head count ("heads", "kv_heads") the rows of `key` are reordered over, None if not reordered."""
    entry = None if key in MODEL_TENSORS else _block_entry(key)
    return entry[1] if entry else None


def gguf_names(keys, tied_embeddings: bool) -> dict[str, str]:
    """HF state key -> GGUF name for every tensor to write, in the given order.

    With tied embeddings the LM head is the embedding: it is left out, and llama.cpp reuses
    `token_embd.weight` for the output (as its own converter writes such models).
    """
    return {key: gguf_name(key) for key in keys if not (tied_embeddings and key == OUTPUT_PROJECTION)}
