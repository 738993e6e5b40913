"""evopress.export: both formats load in transformers and reproduce the in-memory pruned model."""

import json

import pytest
import torch
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

from evopress.compress.depth import DropPlan
from evopress.errors import ExportError, UnsupportedModelError
from evopress.export import export
from evopress.export.deci import ffn_mult_for
from evopress.models import adapter_for, load_model
from tests.test_models import one_thread, tiny_model, tokens  # noqa: F401  (one_thread: autouse fixture)

pytestmark = pytest.mark.oldest  # run again under the oldest supported transformers

SUBLAYERS_ONLY = DropPlan((True, False, False, True), (False, True, False, False))
MIXED = DropPlan((True, True, False, True), (False, True, True, False))  # block 1 removed whole


def pruned(family, plan, **overrides):
    adapter = adapter_for(tiny_model(family, **overrides))
    adapter.apply_plan(plan)
    return adapter


@torch.no_grad()
def assert_loads_and_matches(adapter, path, remote=False):
    loaded = AutoModelForCausalLM.from_pretrained(path, trust_remote_code=remote).eval()
    x = tokens(seq=12)
    torch.testing.assert_close(loaded(x).logits, adapter.model(x).logits, rtol=0, atol=1e-5)
    return loaded


def tiny_tokenizer():
    vocab = {f"t{i}": i for i in range(127)} | {"[UNK]": 127}
    model = Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    return PreTrainedTokenizerFast(tokenizer_object=model, unk_token="[UNK]")


@pytest.mark.parametrize("family", ["llama", "mistral", "qwen2", "qwen3"])
def test_hf_export_loads_stock_and_matches(tmp_path, family):
    adapter = pruned(family, MIXED)
    report = export(adapter, MIXED, None, tmp_path / "out", fmt="hf")
    loaded = assert_loads_and_matches(adapter, report.path)
    assert type(loaded) is type(adapter.model)
    assert loaded.config.num_hidden_layers == 3
    assert report.format == "hf" and report.bytes_on_disk > 0


def test_hf_export_fixes_per_layer_config_and_ties(tmp_path):
    sliding = {"use_sliding_window": True, "sliding_window": 5, "max_window_layers": 2}
    adapter = pruned("qwen2", MIXED, tie_word_embeddings=True, **sliding)
    report = export(adapter, MIXED, None, tmp_path / "out")
    config = json.loads((report.path / "config.json").read_text())
    assert config["layer_types"] == ["full_attention", "sliding_attention", "sliding_attention"]
    assert config["max_window_layers"] == 1
    assert_loads_and_matches(adapter, report.path)  # 12 tokens: the 5-token window matters


def test_hf_export_is_smaller_when_blocks_are_removed(tmp_path):
    dense = export(pruned("llama", DropPlan.dense(4)), DropPlan.dense(4), None, tmp_path / "dense")
    plan = DropPlan.blocks(4, [0, 2])
    smaller = export(pruned("llama", plan), plan, None, tmp_path / "pruned")
    assert smaller.bytes_on_disk < 0.8 * dense.bytes_on_disk
    state = load_model(smaller.path)[0].state_dict()
    assert not any(k.startswith("model.layers.2.") for k in state)


@pytest.mark.parametrize("family", ["llama", "mistral", "qwen2"])
def test_nemotron_nas_export_loads_with_remote_code_and_matches(tmp_path, family):
    adapter = pruned(family, MIXED, tie_word_embeddings=family == "qwen2")
    report = export(adapter, MIXED, None, tmp_path / "out", fmt="nemotron-nas")
    loaded = assert_loads_and_matches(adapter, report.path, remote=True)
    assert type(loaded).__name__ == "DeciLMForCausalLM"
    config = json.loads((report.path / "config.json").read_text())
    assert config["model_type"] == "nemotron-nas" and config["architectures"] == ["DeciLMForCausalLM"]
    blocks = config["block_configs"]
    no_ops = [(b["attention"]["no_op"], b["ffn"]["no_op"]) for b in blocks]
    assert no_ops == [(True, False), (False, True), (True, False)]
    assert blocks[0]["attention"]["n_heads_in_group"] is None and blocks[1]["ffn"]["ffn_mult"] is None
    assert blocks[1]["attention"]["n_heads_in_group"] == 2 and blocks[0]["ffn"]["ffn_mult"] == 6.0
    with pytest.raises(UnsupportedModelError, match="trust_remote_code"):
        load_model(report.path)  # searching runs on the source model, and says so


@torch.no_grad()
def test_nemotron_nas_matches_with_llama3_rope_decoupled_heads_and_generates(tmp_path):
    rope = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 8}
    adapter = pruned("llama", SUBLAYERS_ONLY, rope_parameters=rope, head_dim=32, attention_bias=True)
    report = export(adapter, SUBLAYERS_ONLY, None, tmp_path / "out", fmt="nemotron-nas")
    loaded = assert_loads_and_matches(adapter, report.path, remote=True)
    x = tokens(seq=5)
    assert torch.equal(generate(loaded, x), greedy_without_cache(adapter.model, x))


def greedy_without_cache(model, x, steps=6):
    """Greedy decoding by full forward passes: what `generate()` must give through its KV cache."""
    for _ in range(steps):
        next_token = model(x, use_cache=False).logits[:, -1].argmax(-1, keepdim=True)
        x = torch.cat([x, next_token], dim=1)
    return x


def generate(model, x, steps=6):
    return model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=steps, min_new_tokens=steps,
                          do_sample=False, pad_token_id=0)


def sparse(adapter, fraction=0.5):
    """Zero the smallest weights of every linear layer, as a sparsity export holds them."""
    for b in range(adapter.num_blocks):
        for module in adapter.linears(b).values():
            w = module.weight.data
            w[w.abs() <= w.abs().flatten().kthvalue(int(fraction * w.numel())).values] = 0
    return adapter


# Each export format, in the state that writes it: depth plans through both writers, sparse weights.
EXPORTS = {"hf": ("llama", MIXED, "hf"), "nemotron-nas": ("mistral", MIXED, "nemotron-nas"),
           "hf-block0-attn-dropped": ("qwen2", SUBLAYERS_ONLY, "hf"),
           "nemotron-nas-block0-attn-dropped": ("llama", SUBLAYERS_ONLY, "nemotron-nas"),
           "sparsity": ("qwen3", DropPlan.dense(4), "hf")}


@pytest.mark.parametrize("case", list(EXPORTS))
@torch.no_grad()
def test_generate_of_every_export_equals_greedy_decoding_without_the_cache(tmp_path, case):
    family, plan, fmt = EXPORTS[case]
    adapter = pruned(family, plan)
    if case == "sparsity":
        sparse(adapter)
    report = export(adapter, plan, None, tmp_path / "out", fmt=fmt)
    loaded = AutoModelForCausalLM.from_pretrained(report.path, trust_remote_code=fmt != "hf").eval()
    x = tokens(seq=5)
    reference = greedy_without_cache(adapter.model, x)
    assert torch.equal(generate(loaded, x), reference)
    assert torch.equal(generate(adapter.model, x), reference)  # the in-memory pruned model too


def test_nemotron_nas_drops_the_bytes_of_dropped_sublayers(tmp_path):
    adapter = pruned("llama", SUBLAYERS_ONLY)
    hf = export(adapter, SUBLAYERS_ONLY, None, tmp_path / "hf", fmt="hf")
    nas = export(adapter, SUBLAYERS_ONLY, None, tmp_path / "nas", fmt="nemotron-nas")
    mlp_bytes = adapter.sublayer_params("mlp") * 4
    assert nas.bytes_on_disk < hf.bytes_on_disk - mlp_bytes


def test_nemotron_nas_refuses_what_it_cannot_express(tmp_path):
    with pytest.raises(ExportError, match="format 'hf'"):
        export(pruned("llama", MIXED, intermediate_size=200), MIXED, None, tmp_path / "a", fmt="nemotron-nas")
    with pytest.raises(ExportError, match="q_norm"):
        export(pruned("qwen3", MIXED), MIXED, None, tmp_path / "b", fmt="nemotron-nas")
    with pytest.raises(ExportError, match="sliding-window"):
        export(pruned("mistral", MIXED, sliding_window=8), MIXED, None, tmp_path / "c", fmt="nemotron-nas")
    assert not any(tmp_path.iterdir())  # nothing half-written is left behind


def test_ffn_mult_round_trips_real_widths():
    assert ffn_mult_for(14336, 4096) == 5.25  # Llama-3-8B
    assert ffn_mult_for(256, 64) == 6.0
    for width, hidden in [(11008, 4096), (18944, 3584), (28672, 8192), (8960, 1536)]:
        from evopress.export.remote.configuration_nemotron_nas import ffn_intermediate_size

        assert ffn_intermediate_size(ffn_mult_for(width, hidden), hidden) == width
    with pytest.raises(ExportError, match="multiples of 256"):
        ffn_mult_for(11000, 4096)


def test_export_writes_plan_file_and_tokenizer(tmp_path):
    adapter = pruned("llama", MIXED)
    report = export(adapter, MIXED, tiny_tokenizer(), tmp_path / "out")
    record = json.loads((report.path / "evopress_plan.json").read_text())
    assert record["describe"] == ["attn", "attn+mlp", "mlp", "attn"]
    assert record["block_map"] == {"0": 0, "2": 1, "3": 2} and record["format"] == "hf"
    assert DropPlan.from_dict(record["plan"]) == MIXED
    _, tokenizer = load_model(report.path)
    assert tokenizer is not None and tokenizer.convert_tokens_to_ids("t5") == 5


def test_export_guards_its_output_directory(tmp_path):
    adapter = pruned("llama", MIXED)
    with pytest.raises(ExportError, match="nemotron-nas"):
        export(adapter, MIXED, None, tmp_path / "x", fmt="gguf")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(ExportError, match="not an earlier evopress export"):
        export(adapter, MIXED, None, tmp_path / "mine", overwrite=True)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    export(adapter, MIXED, None, tmp_path / "out")
    with pytest.raises(ExportError, match="overwrite=True"):
        export(adapter, MIXED, None, tmp_path / "out", fmt="nemotron-nas")
    report = export(adapter, MIXED, None, tmp_path / "out", fmt="nemotron-nas", overwrite=True)
    assert json.loads((report.path / "evopress_plan.json").read_text())["format"] == "nemotron-nas"


def test_export_leaves_the_in_memory_model_alone(tmp_path):
    adapter = pruned("llama", SUBLAYERS_ONLY)
    x = tokens()
    with torch.no_grad():
        before = adapter.model(x).logits
    export(adapter, MIXED, None, tmp_path / "out", fmt="nemotron-nas")
    assert adapter.plan == SUBLAYERS_ONLY
    with torch.no_grad():
        assert torch.equal(adapter.model(x).logits, before)


def test_large_exports_are_sharded_with_an_index(tmp_path, monkeypatch):
    import functools

    from evopress.export import hf, shards

    monkeypatch.setattr(hf, "save_shards", functools.partial(shards.save_shards, shard_bytes=100_000))
    adapter = pruned("qwen2", MIXED, tie_word_embeddings=True)
    report = export(adapter, MIXED, None, tmp_path / "out")
    files = sorted(p.name for p in report.path.glob("model*.safetensors"))
    assert len(files) > 1 and (report.path / "model.safetensors.index.json").is_file()
    assert_loads_and_matches(adapter, report.path)
