"""A Llama decoder whose layers have their own sizes and may lack their attention or their MLP.

Written by evopress for the models it compresses. `DeciLMForCausalLM` reads the DeciLM /
Nemotron-NAS layout (depth pruning, EvoPress, arXiv 2410.14649: a dropped sublayer is a no-op);
`PrunedLlamaForCausalLM` reads explicit per-layer query heads, KV heads and MLP widths (structured
pruning, DarwinLM, arXiv 2502.07780: each layer keeps its own heads and channels). Both build the
same layers from their config's `layer_sizes()`: an absent sublayer has no weights and no pre-norm,
so the checkpoint is smaller and no compute is spent on it. The math of every present sublayer is
Llama's: RMSNorm, rotary position embeddings (computed by transformers' own Llama rotary module, so
every rope scaling type matches), grouped-query attention (optionally with Qwen3's per-head
query/key norms) and a gated MLP.

Layers without attention keep no KV cache: attention layers use cache slots 0, 1, 2, ... in order,
as vLLM does for this format, so the cache length (and the positions derived from it) is always
that of a layer that really attends.

Self-contained on purpose: transformers copies this file next to the weights and imports it with
`trust_remote_code=True`, so it may import only torch and transformers. It runs on whatever
transformers the user has: older releases pass and return the cache as `past_key_values`,
newer ones (5.24) as `cache`; both are taken, and outputs carry it under the field the release defines.
"""

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.activations import ACT2FN
from transformers.cache_utils import DynamicCache
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

from .configuration_nemotron_nas import NemotronNasConfig, PrunedLlamaConfig


# The output field that carries the KV cache in the installed transformers ("cache" in newer releases).
CACHE_FIELD = "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"


def given_cache(cache, kwargs):
    """The cache `generate()` passed, under either name (`cache`, or the older `past_key_values`)."""
    return cache if cache is not None else kwargs.pop("past_key_values", None)


class NasRMSNorm(nn.Module):
    def __init__(self, size: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x):
        # Normalise in float32 and cast back before the scale, as Llama does, so logits match it.
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(x.dtype)


def rotate_half(x):
    first, second = x.chunk(2, dim=-1)
    return torch.cat((-second, first), dim=-1)


def apply_rotary(q, k, cos, sin):
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    return q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin


class NasAttention(nn.Module):
    """Grouped-query attention with `num_heads` query heads over `num_kv_heads` KV heads: query head
    i uses KV head i // (num_heads / num_kv_heads), as in Llama."""

    def __init__(self, config, num_heads: int, num_kv_heads: int, cache_index: int):
        super().__init__()
        self.num_heads, self.num_kv_heads = num_heads, num_kv_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        self.cache_index = cache_index
        bias, hidden, kv_width = config.attention_bias, config.hidden_size, num_kv_heads * self.head_dim
        self.q_proj = nn.Linear(hidden, num_heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(hidden, kv_width, bias=bias)
        self.v_proj = nn.Linear(hidden, kv_width, bias=bias)
        self.o_proj = nn.Linear(num_heads * self.head_dim, hidden, bias=getattr(config, "o_proj_bias", bias))
        self.q_norm = self.k_norm = None
        if getattr(config, "qk_norm", False):  # Qwen3: RMSNorm over each query and key head
            self.q_norm = NasRMSNorm(self.head_dim, config.rms_norm_eps)
            self.k_norm = NasRMSNorm(self.head_dim, config.rms_norm_eps)

    def forward(self, x, cos, sin, mask, cache):
        batch, seq, _ = x.shape
        q = self.q_proj(x).view(batch, seq, -1, self.head_dim)
        k = self.k_proj(x).view(batch, seq, -1, self.head_dim)
        v = self.v_proj(x).view(batch, seq, -1, self.head_dim).transpose(1, 2)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = apply_rotary(q.transpose(1, 2), k.transpose(1, 2), cos, sin)
        if cache is not None:
            k, v = cache.update(k, v, self.cache_index)
        groups = self.num_heads // self.num_kv_heads
        k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.head_dim**-0.5)
        return self.o_proj(y.transpose(1, 2).reshape(batch, seq, -1))


class NasMLP(nn.Module):
    def __init__(self, config, intermediate_size: int):
        super().__init__()
        hidden, bias = config.hidden_size, getattr(config, "mlp_bias", False)
        self.gate_proj = nn.Linear(hidden, intermediate_size, bias=bias)
        self.up_proj = nn.Linear(hidden, intermediate_size, bias=bias)
        self.down_proj = nn.Linear(intermediate_size, hidden, bias=bias)
        self.act = ACT2FN[config.hidden_act]

    def forward(self, x):
        return self.down_proj(self.act(self.gate_proj(x)) * self.up_proj(x))


class NasDecoderLayer(nn.Module):
    """x + attn(norm(x)), then x + mlp(norm(x)); a half with 0 heads or 0 width is absent (`no_op`)."""

    def __init__(self, config, heads: int, kv_heads: int, width: int, cache_index: int):
        super().__init__()
        self.self_attn = self.mlp = None
        if heads:
            self.input_layernorm = NasRMSNorm(config.hidden_size, config.rms_norm_eps)
            self.self_attn = NasAttention(config, heads, kv_heads, cache_index)
        if width:
            self.post_attention_layernorm = NasRMSNorm(config.hidden_size, config.rms_norm_eps)
            self.mlp = NasMLP(config, width)

    def forward(self, x, cos, sin, mask, cache):
        if self.self_attn is not None:
            x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask, cache)
        if self.mlp is not None:
            x = x + self.mlp(self.post_attention_layernorm(x))
        return x


def causal_mask(attention_mask, batch: int, seq: int, past: int, dtype, device):
    """Additive [batch, 1, seq, past + seq] mask: causal, plus padding from a 2-D attention mask."""
    total = past + seq
    query_pos = torch.arange(seq, device=device) + past
    allowed = torch.arange(total, device=device)[None, :] <= query_pos[:, None]
    allowed = allowed[None, None].expand(batch, 1, seq, total)
    if attention_mask is not None and attention_mask.dim() == 2:
        allowed = allowed & attention_mask[:, None, None, -total:].bool()
    # A finite minimum, not -inf: a fully padded query row then stays finite instead of NaN.
    blocked = torch.zeros(allowed.shape, dtype=dtype, device=device)
    return blocked.masked_fill(~allowed, torch.finfo(dtype).min)


class NemotronNasPreTrainedModel(PreTrainedModel):
    config_class = NemotronNasConfig
    base_model_prefix = "model"
    _no_split_modules = ["NasDecoderLayer"]
    supports_gradient_checkpointing = False


class NemotronNasModel(NemotronNasPreTrainedModel):
    def __init__(self, config):
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, config.pad_token_id)
        layers, cache_index = [], 0
        for heads, kv_heads, width in config.layer_sizes():
            layers.append(NasDecoderLayer(config, heads, kv_heads, width, cache_index))
            cache_index += 1 if heads else 0
        self.layers = nn.ModuleList(layers)
        self.norm = NasRMSNorm(config.hidden_size, config.rms_norm_eps)
        self.rotary_emb = LlamaRotaryEmbedding(config=config)
        self.post_init()

    def get_input_embeddings(self):
        return self.embed_tokens

    def set_input_embeddings(self, value):
        self.embed_tokens = value

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, cache=None,
                inputs_embeds=None, use_cache=None, **kwargs):
        x = self.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds
        use_cache = self.config.use_cache if use_cache is None else use_cache
        cache = given_cache(cache, kwargs)
        if use_cache and cache is None:
            cache = DynamicCache()
        cache = cache if use_cache else None
        past = cache.get_seq_length() if cache is not None else 0
        batch, seq = x.shape[:2]
        if position_ids is None:
            position_ids = (torch.arange(seq, device=x.device) + past).unsqueeze(0)
        cos, sin = self.rotary_emb(x, position_ids)
        mask = causal_mask(attention_mask, batch, seq, past, x.dtype, x.device)
        for layer in self.layers:
            x = layer(x, cos, sin, mask, cache)
        return BaseModelOutputWithPast(last_hidden_state=self.norm(x), **{CACHE_FIELD: cache})


class DeciLMForCausalLM(NemotronNasPreTrainedModel, GenerationMixin):
    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}

    def __init__(self, config):
        super().__init__(config)
        self.model = NemotronNasModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self):
        return self.model.embed_tokens

    def set_input_embeddings(self, value):
        self.model.embed_tokens = value

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, value):
        self.lm_head = value

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, cache=None,
                inputs_embeds=None, labels=None, use_cache=None, logits_to_keep=0, **kwargs):
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                         cache=given_cache(cache, kwargs), inputs_embeds=inputs_embeds, use_cache=use_cache)
        hidden = out.last_hidden_state
        if isinstance(logits_to_keep, int) and logits_to_keep > 0:
            hidden = hidden[:, -logits_to_keep:]
        logits = self.lm_head(hidden)
        loss = None
        if labels is not None:
            shifted = logits[:, :-1].flatten(0, 1).float()
            loss = F.cross_entropy(shifted, labels[:, 1:].flatten().to(logits.device), ignore_index=-100)
        return CausalLMOutputWithPast(loss=loss, logits=logits, **{CACHE_FIELD: getattr(out, CACHE_FIELD)})


class PrunedLlamaForCausalLM(DeciLMForCausalLM):
    """The same decoder, its per-layer sizes read from a `PrunedLlamaConfig` (structured pruning)."""

    config_class = PrunedLlamaConfig
