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

from torch import nn

from evopress.models import saving
from evopress.models.adapter import CheckpointLayout, ModelAdapter
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
)


class LlamaFamilyAdapter(ModelAdapter):
    """Blocks, sublayer skipping and names for a `*ForCausalLM` of the Llama family."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.facts = FAMILIES[model.config.model_type]
        self._kept: dict[tuple[int, str], tuple[nn.Module, nn.Module]] = {}
        self._steps = {"attn": _attn_step, "mlp": _mlp_step}

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
        parameters as inputs, so one graph per sublayer kind serves all blocks; shapes are dynamic
        because the number of stacked candidates changes from call to call."""
        import torch

        self._steps = {kind: torch.compile(step, dynamic=True, backend=backend)
                       for kind, step in (("attn", _attn_step), ("mlp", _mlp_step))}

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
