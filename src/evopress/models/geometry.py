"""A Llama-family model's shapes and settings, in neutral terms an exporter can use.

Exporters to other layouts (DeciLM / Nemotron-NAS `block_configs`) need the model's geometry, but
only this package reads Hugging Face config fields and module names. Per-block sizes come from the
real weight shapes, not the config, so a block whose heads or MLP channels were pruned reports what
it actually has.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BlockGeometry:
    num_heads: int
    num_kv_heads: int
    intermediate_size: int


@dataclass(frozen=True)
class Geometry:
    model_type: str
    hidden_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    rms_norm_eps: float
    hidden_act: str
    max_position_embeddings: int
    rope_parameters: dict  # transformers 5 form: rope_type, rope_theta and any scaling keys
    tie_word_embeddings: bool
    qkv_bias: bool
    o_bias: bool
    mlp_bias: bool
    qk_norm: bool
    sliding_window: int | None  # the window of any layer that uses one, else None
    bos_token_id: object
    eos_token_id: object
    pad_token_id: object
    dtype: str
    blocks: tuple[BlockGeometry, ...]


def _rope_parameters(config) -> dict:
    rope = getattr(config, "rope_parameters", None)
    if rope:
        return dict(rope)
    # Configs that predate the transformers 5 field keep theta and scaling apart.
    legacy = dict(getattr(config, "rope_scaling", None) or {})
    legacy.setdefault("rope_type", legacy.pop("type", "default"))
    legacy.setdefault("rope_theta", getattr(config, "rope_theta", 10000.0))
    return legacy


def _sliding_window(config, facts) -> int | None:
    window = getattr(config, "sliding_window", None)
    if facts.sliding_window == "global":
        return window
    layer_types = getattr(config, "layer_types", None) or ()
    if facts.sliding_window == "per_layer" and "sliding_attention" in layer_types:
        return window
    return None


def _block(adapter, index: int, head_dim: int) -> BlockGeometry:
    attn, _ = adapter.original(index, "attn")
    mlp, _ = adapter.original(index, "mlp")
    return BlockGeometry(
        num_heads=attn.q_proj.out_features // head_dim,
        num_kv_heads=attn.k_proj.out_features // head_dim,
        intermediate_size=mlp.down_proj.in_features,
    )


def read_geometry(adapter) -> Geometry:
    """The geometry of a `LlamaFamilyAdapter`'s model."""
    config, facts = adapter.config, adapter.facts
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    attn, _ = adapter.original(0, "attn")
    mlp, _ = adapter.original(0, "mlp")
    dtype = next(adapter.model.parameters()).dtype
    return Geometry(
        model_type=config.model_type,
        hidden_size=config.hidden_size,
        num_heads=config.num_attention_heads,
        num_kv_heads=getattr(config, "num_key_value_heads", None) or config.num_attention_heads,
        head_dim=head_dim,
        intermediate_size=config.intermediate_size,
        vocab_size=config.vocab_size,
        rms_norm_eps=config.rms_norm_eps,
        hidden_act=config.hidden_act,
        max_position_embeddings=config.max_position_embeddings,
        rope_parameters=_rope_parameters(config),
        tie_word_embeddings=bool(getattr(config, "tie_word_embeddings", False)),
        qkv_bias=attn.q_proj.bias is not None,
        o_bias=attn.o_proj.bias is not None,
        mlp_bias=mlp.down_proj.bias is not None,
        qk_norm=facts.qk_norm,
        sliding_window=_sliding_window(config, facts),
        bos_token_id=getattr(config, "bos_token_id", None),
        eos_token_id=getattr(config, "eos_token_id", None),
        pad_token_id=getattr(config, "pad_token_id", None),
        dtype=str(dtype).removeprefix("torch."),
        blocks=tuple(_block(adapter, i, head_dim) for i in range(adapter.num_blocks)),
    )
