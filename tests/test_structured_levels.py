"""Structured levels as data (compress/structured.py): exact parameter counts against the real
modules of the zoo model and of a Qwen2-shaped one (biases), and the level schedules."""

import pytest
from transformers import AutoModelForCausalLM, Qwen2Config, Qwen2ForCausalLM, Qwen3Config, Qwen3ForCausalLM

from evopress.compress.structured import MLP, Attention
from evopress.models import adapter_for
from evopress.zoo import tiny_model_dir


def _count(module):
    return sum(p.numel() for p in module.parameters())


def _shapes(model):
    geometry = adapter_for(model).geometry()
    return model.model.layers[0], Attention.of(geometry), MLP.of(geometry)


def _small(cls, config, **extra):
    return cls(config(hidden_size=64, intermediate_size=96, num_hidden_layers=1, num_attention_heads=8,
                      num_key_value_heads=2, vocab_size=64, **extra))


@pytest.mark.parametrize("which", ["zoo", "qwen2", "qwen3"])
def test_full_levels_count_the_modules_parameters(which):
    if which == "zoo":
        model = AutoModelForCausalLM.from_pretrained(tiny_model_dir())
    elif which == "qwen2":
        model = _small(Qwen2ForCausalLM, Qwen2Config)  # q/k/v biases
    else:
        model = _small(Qwen3ForCausalLM, Qwen3Config, head_dim=16)  # q/k norms, head_dim of its own
    block, attn, mlp = _shapes(model)
    assert attn.full == _count(block.self_attn)
    assert mlp.params(mlp.intermediate) == _count(block.mlp)
    assert attn.params(0, 0) == 0 and mlp.params(0) == 0


def test_a_shrunk_attention_counts_what_it_keeps():
    block, attn, _ = _shapes(_small(Qwen2ForCausalLM, Qwen2Config))
    a, hd = block.self_attn, attn.head_dim
    heads, kv = 2, 1  # two query heads of one KV group: q and o keep 2 heads, k and v one
    q = a.q_proj.weight[: heads * hd].numel() + a.q_proj.bias[: heads * hd].numel()
    k_and_v = 2 * (a.k_proj.weight[: kv * hd].numel() + a.k_proj.bias[: kv * hd].numel())
    kept = q + k_and_v + a.o_proj.weight[:, : heads * hd].numel()
    assert attn.params(heads, kv) == kept


def test_schedules_step_evenly_and_end_removed():
    assert MLP(4096, 14336).removed_channels() == [0, 1440, 2880, 4288, 5728, 7168, 8608, 10048, 11456,
                                                   12896, 14336]
    assert MLP(64, 96).removed_channels() == [0, 32, 64, 96]  # a small MLP has fewer distinct levels
    targets = Attention(4096, 32, 8, 128).removed_targets()
    assert targets[0] == 0 and targets[-1] == Attention(4096, 32, 8, 128).full and len(targets) == 11
