"""The zoo's models are plain Hugging Face Llama models, so every real loading path applies to them."""

from __future__ import annotations

import math

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from evopress.zoo.presets import Preset


def llama_config(preset: Preset, tokenizer) -> LlamaConfig:
    """A LlamaConfig with the preset's shape and the tokenizer's special tokens."""
    return LlamaConfig(
        # the embedding keeps the preset's size even if the BPE learned fewer tokens
        vocab_size=max(preset.vocab_size, len(tokenizer)),
        hidden_size=preset.hidden_size,
        intermediate_size=preset.intermediate_size,
        num_hidden_layers=preset.num_layers,
        num_attention_heads=preset.num_heads,
        num_key_value_heads=preset.num_kv_heads,
        max_position_embeddings=preset.seq_len,
        rms_norm_eps=1e-5,
        # 1/sqrt(width) rather than HF's fixed 0.02: thin models otherwise sit long at unigram loss
        initializer_range=preset.hidden_size**-0.5,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )


def build_model(preset: Preset, tokenizer, seed: int) -> LlamaForCausalLM:
    """A freshly initialised fp32 Llama; the weights depend only on `seed` and the preset."""
    torch.manual_seed(seed)
    model = LlamaForCausalLM(llama_config(preset, tokenizer)).float()
    # GPT-2's residual scaling (Radford et al. 2019): each block's output projections start
    # 1/sqrt(2 * layers) smaller, so the residual stream does not grow with depth at init
    scale = 1.0 / math.sqrt(2 * preset.num_layers)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.mul_(scale)
            layer.mlp.down_proj.weight.mul_(scale)
    return model
