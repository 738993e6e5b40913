"""The zoo: presets, the shipped tiny model, reproducible training, the cache fallback."""

import json
import sys

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from evopress.data import load_tokens
from evopress.errors import RecipeError
from evopress.eval.metrics import perplexity
from evopress.zoo import PRESETS, get_preset, tiny_model_dir, train
from evopress.zoo.checkpoint import REQUIRED, is_complete, read_record
from evopress.zoo.evaluate import unigram_perplexity
from evopress.zoo.shipped import SHIPPED_TINY
from evopress.zoo.training import lr_at

# A preset small enough to train in seconds: it checks the recipe, not the model quality.
MINI = PRESETS["tiny"].replace(
    name="mini", vocab_size=384, hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=1,
    intermediate_size=256, seq_len=32, train_tokens=32 * 4 * 12, batch_size=4, warmup_steps=3,
    tokenizer_chars=60_000, eval_tokens=32 * 8,
)


def test_tiny_preset_shape():
    tiny = PRESETS["tiny"]
    assert tiny.num_layers >= 8 and tiny.num_kv_heads < tiny.num_heads
    assert tiny.intermediate_size % 256 == 0 and tiny.seq_len == 256
    bench = PRESETS["bench"]
    assert (bench.num_layers, bench.hidden_size, bench.vocab_size, bench.seq_len) == (16, 512, 8192, 1024)
    assert bench.site_packages and bench.bf16_autocast


def test_preset_errors_say_what_exists():
    with pytest.raises(RecipeError, match="tiny, bench"):
        get_preset("huge")
    with pytest.raises(RecipeError, match="multiple of num_kv_heads"):
        PRESETS["tiny"].replace(num_kv_heads=3)


def test_schedule_warms_up_then_decays_to_the_floor():
    p = PRESETS["tiny"]
    lrs = [lr_at(s, p) for s in range(p.steps)]
    assert lrs[0] < lrs[p.warmup_steps - 1] == pytest.approx(p.lr)
    decay = lrs[p.warmup_steps:]
    assert all(a >= b for a, b in zip(decay[:-1], decay[1:], strict=True))
    assert lrs[-1] == pytest.approx(p.lr * p.min_lr_ratio, rel=1e-3)


def test_shipped_tiny_model_is_a_real_trained_llama():
    assert tiny_model_dir() == SHIPPED_TINY and is_complete(SHIPPED_TINY)
    model = AutoModelForCausalLM.from_pretrained(SHIPPED_TINY, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(SHIPPED_TINY)
    tiny = PRESETS["tiny"]
    assert model.config.model_type == "llama" and model.config.num_hidden_layers == tiny.num_layers
    assert model.config.num_key_value_heads == tiny.num_kv_heads
    assert tokenizer.eos_token_id == model.config.eos_token_id is not None
    assert tokenizer.bos_token_id == model.config.bos_token_id is not None
    record = read_record(SHIPPED_TINY)
    assert record["preset"]["name"] == "tiny"
    assert record["heldout_perplexity"] < record["heldout_unigram_perplexity"] / 3
    windows = load_tokens("builtin", tokenizer, "heldout", tiny.seq_len, 16 * tiny.seq_len, seed=0)
    assert perplexity(model, windows) < unigram_perplexity(windows) / 2


def _weights(path):
    return load_file(path / "model.safetensors")


def test_training_is_reproducible(tmp_path):
    first = train(MINI, tmp_path / "a", device="cpu", seed=0, progress=False)
    second = train(MINI, tmp_path / "b", device="cpu", seed=0, progress=False)
    a, b = _weights(first), _weights(second)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (first / "tokenizer.json").read_bytes() == (second / "tokenizer.json").read_bytes()
    record = read_record(first)
    assert record["tokens_seen"] == MINI.steps * MINI.tokens_per_step and record["seed"] == 0
    assert {"torch", "transformers", "python"} <= record["versions"].keys()
    assert all((first / name).is_file() for name in REQUIRED)


def test_missing_shipped_model_is_trained_once_into_the_cache(tmp_path, monkeypatch):
    shipped = sys.modules["evopress.zoo.shipped"]
    training = sys.modules["evopress.zoo.training"]
    monkeypatch.setattr(shipped, "SHIPPED_TINY", tmp_path / "not-shipped")
    monkeypatch.setenv("EVOPRESS_CACHE", str(tmp_path / "cache"))
    calls = []

    def fake_train(preset, out_dir, **kwargs):
        calls.append(preset)
        for name in REQUIRED:
            (out_dir / name).write_text(json.dumps({}))
        return out_dir

    monkeypatch.setattr(training, "train", fake_train)
    expected = tmp_path / "cache" / "zoo" / "tiny"
    assert shipped.tiny_model_dir(progress=False) == expected
    assert shipped.tiny_model_dir(progress=False) == expected
    assert calls == ["tiny"] and is_complete(expected)
    assert [p.name for p in expected.parent.iterdir()] == ["tiny"]


def test_processes_racing_for_a_missing_model_train_it_once(tmp_path, monkeypatch):
    # parallel test workers (or two users of one cache) asking at once: one trains, the other waits
    import threading
    import time

    shipped = sys.modules["evopress.zoo.shipped"]
    training = sys.modules["evopress.zoo.training"]
    monkeypatch.setattr(shipped, "SHIPPED_TINY", tmp_path / "not-shipped")
    monkeypatch.setenv("EVOPRESS_CACHE", str(tmp_path / "cache"))
    calls = []

    def slow_train(preset, out_dir, **kwargs):
        calls.append(preset)
        time.sleep(0.5)
        for name in REQUIRED:
            (out_dir / name).write_text(json.dumps({}))
        return out_dir

    monkeypatch.setattr(training, "train", slow_train)
    found = []
    workers = [threading.Thread(target=lambda: found.append(shipped.tiny_model_dir(progress=False))) for _ in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert calls == ["tiny"] and found == [tmp_path / "cache" / "zoo" / "tiny"] * 2
