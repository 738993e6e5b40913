"""evopress.models: adapters, sublayer skipping, block I/O capture and loading, on tiny random models."""

import pytest
import torch
from transformers import (
    DynamicCache,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
)

from evopress.compress.depth import DropPlan
from evopress.errors import UnsupportedModelError
from evopress.models import ModelLoadError, PlanError, adapter_for, load_model

pytestmark = pytest.mark.oldest  # run again under the oldest supported transformers

FAMILIES = {
    "llama": (LlamaConfig, LlamaForCausalLM),
    "mistral": (MistralConfig, MistralForCausalLM),
    "qwen2": (Qwen2Config, Qwen2ForCausalLM),
    "qwen3": (Qwen3Config, Qwen3ForCausalLM),
}
TINY = dict(vocab_size=128, hidden_size=64, intermediate_size=256, num_hidden_layers=4,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # Tiny matmuls gain nothing from threads, and on busy shared cores thread hand-offs cost seconds.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def tiny_model(family="llama", seed=0, **overrides):
    """A 4-block fp32 random model of `family`; `overrides` replace config fields."""
    config_cls, model_cls = FAMILIES[family]
    extra = {"sliding_window": None} if family == "mistral" else {}
    torch.manual_seed(seed)
    return model_cls(config_cls(**{**TINY, **extra, **overrides})).eval()


def tokens(batch=2, seq=9, seed=1):
    return torch.randint(0, TINY["vocab_size"], (batch, seq), generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def test_dropped_attention_is_the_block_without_attention_in_every_family():
    for family in FAMILIES:
        model = tiny_model(family)
        adapter = adapter_for(model)
        x = tokens()
        inputs, _ = adapter.block_io(x)
        layer = model.model.layers[1]
        h = inputs[1]
        expected = h + layer.mlp(layer.post_attention_layernorm(h))
        adapter.set_dropped(1, "attn", True)
        _, outputs = adapter.block_io(x)
        torch.testing.assert_close(outputs[1], expected, rtol=0, atol=1e-6, msg=family)


@torch.no_grad()
def test_dropped_mlp_is_the_block_without_mlp_in_every_family():
    for family in FAMILIES:
        model = tiny_model(family)
        adapter = adapter_for(model)
        x = tokens()
        seen = {}
        hook = model.model.layers[2].post_attention_layernorm.register_forward_pre_hook(
            lambda m, args: seen.setdefault("mid", args[0])
        )
        model(x)
        hook.remove()
        adapter.set_dropped(2, "mlp", True)
        _, outputs = adapter.block_io(x)
        torch.testing.assert_close(outputs[2], seen["mid"], rtol=0, atol=0, msg=family)


@torch.no_grad()
def test_dropping_a_whole_block_equals_deleting_it():
    model = tiny_model("qwen2")
    adapter = adapter_for(model)
    x = tokens()
    adapter.apply_plan(DropPlan.blocks(4, [1]))
    pruned = model(x, use_cache=False).logits
    adapter.apply_plan(DropPlan.dense(4))
    layers = model.model.layers
    model.model.layers = torch.nn.ModuleList([layers[0], layers[2], layers[3]])
    model.config.num_hidden_layers = 3
    deleted = model(x, use_cache=False).logits
    torch.testing.assert_close(pruned, deleted, rtol=0, atol=1e-6)


@torch.no_grad()
def test_restoring_every_sublayer_gives_the_dense_model_back():
    model = tiny_model("llama")
    adapter = adapter_for(model)
    x = tokens()
    dense = model(x).logits
    modules = [m for m in model.modules()]
    adapter.apply_plan(DropPlan((True, False, True, True), (False, True, True, False)))
    assert not torch.allclose(model(x).logits, dense)
    adapter.apply_plan(DropPlan.dense(4))
    assert torch.equal(model(x).logits, dense)
    assert [m for m in model.modules()] == modules  # the very same module objects are back


def test_apply_plan_swaps_only_changed_sublayers():
    model = tiny_model("llama")
    adapter = adapter_for(model)
    first = DropPlan((True, False, False, False), (False, True, False, False))
    assert adapter.apply_plan(first) == 2
    assert adapter.plan == first
    before = {(i, name): getattr(layer, name) for i, layer in enumerate(model.model.layers)
              for name in ("self_attn", "mlp", "input_layernorm", "post_attention_layernorm")}
    second = DropPlan((True, False, True, False), (False, False, False, False))
    assert adapter.apply_plan(second) == 2
    assert adapter.plan == second
    changed = {(2, "self_attn"), (2, "input_layernorm"), (1, "mlp"), (1, "post_attention_layernorm")}
    for (i, name), module in before.items():
        now = getattr(model.model.layers[i], name)
        assert (now is module) == ((i, name) not in changed), (i, name)
    assert adapter.apply_plan(second) == 0


def test_set_dropped_is_idempotent():
    model = tiny_model("mistral")
    adapter = adapter_for(model)
    adapter.set_dropped(3, "mlp", True)
    stand_in = model.model.layers[3].mlp
    adapter.set_dropped(3, "mlp", True)
    assert model.model.layers[3].mlp is stand_in
    adapter.set_dropped(3, "mlp", False)
    original = model.model.layers[3].mlp
    adapter.set_dropped(3, "mlp", False)
    assert model.model.layers[3].mlp is original
    assert adapter.plan == DropPlan.dense(4)


def test_restored_sublayer_follows_a_later_dtype_change():
    model = tiny_model("llama")
    adapter = adapter_for(model)
    adapter.set_dropped(0, "attn", True)
    model.to(torch.float64)
    adapter.set_dropped(0, "attn", False)
    assert {p.dtype for p in model.parameters()} == {torch.float64}
    model(tokens())  # runs: no fp32 weights left behind


def test_plan_for_another_model_is_refused():
    adapter = adapter_for(tiny_model("llama"))
    with pytest.raises(PlanError, match="4"):
        adapter.apply_plan(DropPlan.dense(6))
    with pytest.raises(PlanError, match="attn"):
        adapter.set_dropped(0, "ffn", True)


def test_sublayer_params_count_the_sublayer_and_its_prenorm():
    adapter = adapter_for(tiny_model("llama"))
    h, i, kv = 64, 256, 2 * 16
    assert adapter.sublayer_params("attn") == 2 * h * h + 2 * h * kv + h
    assert adapter.sublayer_params("mlp") == 3 * h * i + h
    adapter.set_dropped(0, "mlp", True)  # still counted from the kept real module
    assert adapter.sublayer_params("mlp", block=0) == 3 * h * i + h
    qwen3 = adapter_for(tiny_model("qwen3"))  # head_dim 128: decoupled from hidden / heads
    d = qwen3.config.head_dim
    assert qwen3.sublayer_params("attn") == 2 * h * 4 * d + 2 * h * 2 * d + h + 2 * d  # + q_norm, k_norm


SLIDING = {"use_sliding_window": True, "sliding_window": 6, "max_window_layers": 2}


@torch.no_grad()
@pytest.mark.parametrize("family,extra", [("llama", {}), ("qwen2", SLIDING)])
def test_generate_with_cache_matches_full_forwards(family, extra):
    model = tiny_model(family, **extra)
    adapter = adapter_for(model)
    adapter.apply_plan(DropPlan((True, False, True, False), (False, True, True, False)))
    x = tokens(batch=2, seq=5)
    settings = dict(max_new_tokens=8, do_sample=False, use_cache=True, pad_token_id=0)
    out = model.generate(x, attention_mask=torch.ones_like(x), **settings)
    seq = x
    for _ in range(8):
        nxt = model(seq, use_cache=False).logits[:, -1].argmax(-1, keepdim=True)
        seq = torch.cat([seq, nxt], dim=1)
    assert torch.equal(out, seq)


@torch.no_grad()
def test_chunked_prefill_through_the_cache_matches_one_pass():
    # Without position ids the model derives positions from cache layer 0, whose attention is dropped.
    model = tiny_model("llama")
    adapter_for(model).apply_plan(DropPlan((True, False, False, True), (False, False, True, False)))
    x = tokens(batch=1, seq=10)
    full = model(x, use_cache=False).logits
    cache = DynamicCache(config=model.config)
    first = model(x[:, :6], past_key_values=cache, use_cache=True).logits
    second = model(x[:, 6:], past_key_values=cache, use_cache=True).logits
    torch.testing.assert_close(torch.cat([first, second], dim=1), full, rtol=0, atol=1e-5)


@torch.no_grad()
def test_block_io_sees_the_last_block_before_the_final_norm():
    model = tiny_model("qwen3")
    adapter = adapter_for(model)
    x = tokens()
    inputs, outputs = adapter.block_io(x)
    assert len(inputs) == len(outputs) == 4
    for i in range(3):
        assert torch.equal(outputs[i], inputs[i + 1])
    assert torch.equal(inputs[0], model.model.embed_tokens(x))
    last = model.model(x).last_hidden_state
    torch.testing.assert_close(model.model.norm(outputs[-1]), last, rtol=0, atol=1e-6)
    assert not torch.allclose(outputs[-1], last)


def test_unsupported_model_lists_the_supported_types(tmp_path):
    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=64, n_positions=32))
    with pytest.raises(UnsupportedModelError, match="llama, mistral, qwen2, qwen3"):
        adapter_for(gpt2)
    gpt2.save_pretrained(tmp_path / "gpt2")
    with pytest.raises(UnsupportedModelError, match="gpt2"):
        load_model(tmp_path / "gpt2")


def test_load_model_reads_a_directory_in_eval_mode(tmp_path):
    model = tiny_model("qwen3")
    model.save_pretrained(tmp_path / "m")
    loaded, tokenizer = load_model(tmp_path / "m", dtype="bfloat16")
    assert tokenizer is None and not loaded.training
    assert next(loaded.parameters()).dtype == torch.bfloat16
    loaded, _ = load_model(str(tmp_path / "m"), dtype="float32", device="cpu")
    x = tokens()
    with torch.no_grad():
        assert torch.equal(loaded(x).logits, model(x).logits)


def test_load_model_explains_bad_paths(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="config.json"):
        load_model(tmp_path / "empty")
    with pytest.raises(ModelLoadError, match="dtype"):
        tiny_model("llama").save_pretrained(tmp_path / "m")
        load_model(tmp_path / "m", dtype="float8")


@torch.no_grad()
@pytest.mark.parametrize("family,extra", [("llama", {}), ("mistral", {"sliding_window": 6}),
                                          ("qwen2", SLIDING), ("qwen3", {})])
def test_stacked_block_written_out_equals_the_hooked_module(family, extra):
    """The Llama family's explicit block math (sparsity search) against the real module with hooks."""
    from evopress.models.adapter import ModelAdapter

    model = tiny_model(family, **extra)
    adapter = adapter_for(model)
    seen = {}
    handle = model.model.layers[1].register_forward_pre_hook(
        lambda m, args, kwargs: seen.update(hidden=args[0] if args else kwargs["hidden_states"], kwargs=kwargs),
        with_kwargs=True)
    model(tokens(seq=9), use_cache=False)
    handle.remove()
    kwargs = {k: v for k, v in seen["kwargs"].items() if k != "hidden_states"}
    hidden = torch.cat([seen["hidden"] * s for s in (1.0, 0.5, 2.0)])  # three candidates of two rows
    layer, other = model.model.layers[1], torch.Generator().manual_seed(3)
    own = {m: torch.randn(m.weight.shape, generator=other) for m in (layer.self_attn.o_proj, layer.mlp.gate_proj)}

    def fix(module, x, out):  # the middle candidate has its own o_proj and gate_proj
        if module in own:
            out[2:4] = torch.nn.functional.linear(x[2:4], own[module], module.bias)
        return out

    expected = ModelAdapter.stacked_block(adapter, 1, hidden, kwargs, 3, fix)
    torch.testing.assert_close(adapter.stacked_block(1, hidden, kwargs, 3, fix), expected, rtol=1e-5, atol=1e-5)
    if family == "qwen3":
        adapter.compile_steps("aot_eager")
        torch.testing.assert_close(adapter.stacked_block(1, hidden, kwargs, 3, fix), expected, rtol=1e-5, atol=1e-5)
    plain = ModelAdapter.stacked_block(adapter, 1, hidden, kwargs, 3, lambda m, x, out: out)
    assert not torch.allclose(plain[2:4], expected[2:4])  # the fix really changed the middle candidate
    torch.testing.assert_close(plain[:2], expected[:2], rtol=0, atol=0)
