"""Adapter for the Llama family (Llama, Mistral, Qwen2, Qwen3) on transformers 5.

These four share one decoder layer shape: `x + self_attn(input_layernorm(x))`, then
`x + mlp(post_attention_layernorm(x))`. What differs between them is a handful of facts, kept in
the `FAMILIES` table rather than in subclasses.

Dropping a sublayer (EvoPress §2.8/§3.3, arXiv 2410.14649) swaps the sublayer for a zero stand-in
and its pre-norm for an identity (the reference computes the norm and throws it away). The real
modules are kept aside, so restoring is a swap back, with no copy and no disk read.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from evopress.models import saving
from evopress.models.adapter import CheckpointLayout, ModelAdapter
from evopress.models.capture import _repeat_batch
from evopress.models.depth_config import config_without_blocks
from evopress.models.geometry import Geometry, read_geometry
from evopress.models.placeholders import ZeroAttention, ZeroMLP


@dataclass(frozen=True)
class FamilyFacts:
    """What sets one member of the family apart from plain Llama."""

    qk_norm: bool  # RMSNorm on each query and key head inside attention (Qwen3)
    sliding_window: str  # "none"; "global" (one window for every layer, Mistral); "per_layer" (layer_types)


FAMILIES: dict[str, FamilyFacts] = {
    "llama": FamilyFacts(qk_norm=False, sliding_window="none"),
    "mistral": FamilyFacts(qk_norm=False, sliding_window="global"),
    "qwen2": FamilyFacts(qk_norm=False, sliding_window="per_layer"),
    "qwen3": FamilyFacts(qk_norm=True, sliding_window="per_layer"),
}

# (sublayer module, its pre-norm) inside a decoder layer, per kind.
SUBLAYERS = {"attn": ("self_attn", "input_layernorm"), "mlp": ("mlp", "post_attention_layernorm")}

LINEAR_GROUPS = (("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"), ("self_attn.o_proj",),
                 ("mlp.gate_proj", "mlp.up_proj"), ("mlp.down_proj",))

LAYOUT = CheckpointLayout(
    block_prefix="model.layers.",
    sublayer_modules={kind: (norm, module) for kind, (module, norm) in SUBLAYERS.items()},
    output_projection={"attn": "self_attn.o_proj", "mlp": "mlp.down_proj"},
    row_units={"self_attn.q_proj": "heads", "self_attn.k_proj": "kv_heads", "self_attn.v_proj": "kv_heads",
               "mlp.gate_proj": "channels", "mlp.up_proj": "channels"},
)


class LlamaFamilyAdapter(ModelAdapter):
    """Blocks, sublayer skipping and names for a `*ForCausalLM` of the Llama family."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.facts = FAMILIES[model.config.model_type]
        self._kept: dict[tuple[int, str], tuple[nn.Module, nn.Module]] = {}
        self._steps, self._pieces = dict(STEPS), dict(PIECES)

    @property
    def config(self):
        return self.model.config

    @property
    def decoder(self) -> nn.Module:
        """The base model (embeddings, blocks, final norm) without the LM head."""
        return self.model.model

    @property
    def num_blocks(self) -> int:
        return len(self.decoder.layers)

    def blocks(self) -> list[nn.Module]:
        return list(self.decoder.layers)

    def linear_groups(self) -> tuple[tuple[str, ...], ...]:
        return LINEAR_GROUPS

    def final_norm(self) -> nn.Module:
        return self.decoder.norm

    def residual_step(self, block: int, kind: str, hidden, kwargs: dict):
        """`hidden + sublayer(pre_norm(hidden))` with the block's real modules, dropped or not.

        `kwargs` are what the decoder passes the block (position embeddings, attention mask).
        """
        module, norm = self.original(block, kind)
        if kind == "mlp":
            return self._steps["mlp"](module, norm, hidden)
        return self._steps["attn"](module, norm, hidden, kwargs["position_embeddings"], kwargs.get("attention_mask"))

    def compile_steps(self, backend: str = "inductor") -> None:
        """Run `residual_step` through `torch.compile` (norm, projections, rotary and residual fused).

        Every block's modules have the same structure, and compiled code takes a module's
        parameters as inputs, so one graph per sublayer kind serves all blocks. Shapes are left to
        automatic dynamism: a size that changes between calls (stacked candidates, rows) becomes
        symbolic on its second value, while the model's fixed sizes (hidden, heads, head_dim) stay
        constants, so norms reduce in one pass and index arithmetic divides by constants (all
        sizes symbolic made the fused rotary kernel several times slower on an H200)."""
        import torch

        self._steps, self._pieces = ({name: torch.compile(fn, backend=backend) for name, fn in fns.items()}
                                     for fns in (STEPS, PIECES))

    def stacked_block(self, block: int, hidden, kwargs: dict, times: int, fix):
        """The decoder layer's math written out, linear layers run here (each output passed
        through `fix`) and what lies between them in four pieces (pre-norm; rotary embedding;
        residual + post-norm; activation), which `compile_steps` fuses. Position embeddings
        stay those of one row batch and are broadcast over the candidates."""
        layer = self.decoder.layers[block]
        attn, mlp, p = layer.self_attn, layer.mlp, self._pieces

        def linear(module, x):
            return fix(module, x, F.linear(x, module.weight, module.bias))

        h = p["norm"](layer.input_layernorm, hidden)
        q, k, v = (linear(m, h) for m in (attn.q_proj, attn.k_proj, attn.v_proj))
        norms = (attn.q_norm, attn.k_norm) if self.facts.qk_norm else None
        q, k = p["rope"](q, k, *kwargs["position_embeddings"], times, attn.head_dim, norms)
        mask = kwargs.get("attention_mask")
        if mask is not None:
            mask = _repeat_batch(mask, hidden.shape[0] // times, times)
        a = _attention(q, k, v.unflatten(-1, (-1, attn.head_dim)), mask, attn.scaling)
        hidden, h = p["add_norm"](layer.post_attention_layernorm, hidden, linear(attn.o_proj, a))
        return hidden + linear(mlp.down_proj, p["act"](mlp.act_fn, linear(mlp.gate_proj, h), linear(mlp.up_proj, h)))

    def embedding_modules(self) -> list[nn.Module]:
        return [self.decoder.embed_tokens, self.decoder.rotary_emb]

    @property
    def layout(self) -> CheckpointLayout:
        return LAYOUT

    def original(self, block: int, kind: str) -> tuple[nn.Module, nn.Module]:
        """The real (sublayer, pre-norm) of a block, whether it is currently dropped or not."""
        self.check_kind(kind)
        if (block, kind) in self._kept:
            return self._kept[(block, kind)]
        module, norm = SUBLAYERS[kind]
        layer = self.decoder.layers[block]
        return getattr(layer, module), getattr(layer, norm)

    def sublayer_params(self, kind: str, block: int = 0) -> int:
        """Parameters of one sublayer including its pre-norm: the unit of depth-pruning budgets."""
        module, norm = self.original(block, kind)
        return sum(p.numel() for m in (module, norm) for p in m.parameters())

    def is_dropped(self, block: int, kind: str) -> bool:
        self.check_kind(kind)
        return (block, kind) in self._kept

    def set_dropped(self, block: int, kind: str, dropped: bool) -> None:
        """Drop or restore one sublayer; a no-op when it is already in that state."""
        if self.is_dropped(block, kind) == dropped:
            return
        layer = self.decoder.layers[block]
        module_name, norm_name = SUBLAYERS[kind]
        if dropped:
            module, norm = getattr(layer, module_name), getattr(layer, norm_name)
            self._kept[(block, kind)] = (module, norm)
            setattr(layer, module_name, self._stand_in(kind, module))
            setattr(layer, norm_name, nn.Identity())
        else:
            module, norm = self._kept.pop((block, kind))
            stand_in = getattr(layer, module_name)
            setattr(layer, module_name, stand_in.place(module))
            setattr(layer, norm_name, stand_in.place(norm))

    @staticmethod
    def _stand_in(kind: str, module: nn.Module) -> nn.Module:
        if kind == "attn":
            return ZeroAttention(module, layer_idx=module.layer_idx)
        return ZeroMLP(module)

    def dense_state_dict(self) -> dict:
        """The full model's tensors by checkpoint name, dropped sublayers included (for export)."""
        state = dict(self.model.state_dict())
        for (block, kind), modules in self._kept.items():
            for name, module in zip(SUBLAYERS[kind], modules):
                prefix = f"{LAYOUT.block_prefix}{block}.{name}."
                state.update({prefix + k: v for k, v in module.state_dict().items()})
        return state

    def geometry(self) -> Geometry:
        return read_geometry(self)

    @property
    def name_or_path(self) -> str | None:
        return getattr(self.model, "name_or_path", None) or None

    def config_without_blocks(self, removed):
        return config_without_blocks(self.config, removed)

    def save_config(self, config, out_dir) -> None:
        saving.save_config(self.model, config, out_dir)
        saving.save_generation_config(self.model, out_dir)

    def save_generation_config(self, out_dir) -> None:
        saving.save_generation_config(self.model, out_dir)


def _mlp_step(module, norm, hidden):
    return hidden + module(norm(hidden))


def _attn_step(module, norm, hidden, position_embeddings, attention_mask):
    out = module(hidden_states=norm(hidden), position_embeddings=position_embeddings, attention_mask=attention_mask)
    return hidden + (out[0] if isinstance(out, tuple) else out)


STEPS = {"attn": _attn_step, "mlp": _mlp_step}


# The pieces of `LlamaFamilyAdapter.stacked_block` between its linear layers.

def _norm(norm, hidden):
    return norm(hidden)


def _add_norm(norm, hidden, out):
    hidden = hidden + out
    return hidden, norm(hidden)


def _act(act_fn, gate, up):
    return act_fn(gate) * up


def _rope_qk(q, k, cos, sin, times: int, head_dim: int, norms):
    """Rotary embedding of `times` stacked candidates' queries and keys, in [batch, seq, heads, head_dim].

    q/k are [times * rows, seq, heads * head_dim] as the projections give them; the rotation is
    done in that layout, before any transpose, so a fused kernel reads and writes contiguously
    (rotating the transposed view, as the modules do, made the compiled kernel 5-10x slower on
    an H200). cos/sin are [rows or 1, seq, head_dim], broadcast over the candidates by
    splitting the row axis (a view, no copy)."""
    q, k = q.unflatten(-1, (-1, head_dim)), k.unflatten(-1, (-1, head_dim))
    if norms is not None:  # Qwen3: RMSNorm per query/key head before the rotation
        q, k = norms[0](q), norms[1](k)
    cos, sin = cos[None, :, :, None], sin[None, :, :, None]
    return _rope(q, cos, sin, times), _rope(k, cos, sin, times)


def _rope(x, cos, sin, times: int):
    x = x.unflatten(0, (times, -1))  # [times, rows, seq, heads, head_dim]
    return (x * cos + _rotate_half(x) * sin).flatten(0, 1)


def _attention(q, k, v, mask, scaling: float):
    """Causal attention as the family's sdpa path; q/k/v are [batch, seq, heads, head_dim]."""
    q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None, scale=scaling,
                                         enable_gqa=k.shape[1] != q.shape[1])
    return out.transpose(1, 2).flatten(2)


def _rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


PIECES = {"norm": _norm, "add_norm": _add_norm, "act": _act, "rope": _rope_qk}
