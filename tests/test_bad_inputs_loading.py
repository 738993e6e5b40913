"""Bad model directories, devices, sequence lengths and export modes are clear errors naming the
problem and the fix, raised before any weights are read; on real tiny models saved to disk."""

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from evopress.compress.depth import DropPlan
from evopress.database.build import matrices
from evopress.errors import ModelLoadError, RecipeError
from evopress.export import export
from evopress.export.sparsity import RECIPE_FILE, write_profile
from evopress.models import adapter_for, load_model
from evopress.models.loading import check_seq_len, check_tokenizer, resolve_device
from evopress.zoo import tiny_model_dir
from tests.test_export import tiny_tokenizer
from tests.test_models import one_thread, tiny_model  # noqa: F401  (one_thread: autouse fixture)

NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without CUDA")


def zoo_copy(tmp_path):
    """A private copy of the shipped tiny model (weights and tokenizer) that a test may damage."""
    return Path(shutil.copytree(tiny_model_dir(), tmp_path / "zoo"))


def cut(path, size):
    os.truncate(path, size)
    return path


@pytest.fixture
def umask():
    """Set the process umask for one test and put the old one back after it."""
    previous = os.umask(0o022)
    yield os.umask
    os.umask(previous)


def test_truncated_safetensors_is_named_with_the_fix(tmp_path):
    weights = zoo_copy(tmp_path) / "model.safetensors"
    cut(weights, weights.stat().st_size // 2)
    with pytest.raises(ModelLoadError, match=r"model\.safetensors is truncated.*re-download.*re-save"):
        load_model(weights.parent)


def test_safetensors_cut_inside_its_header_or_with_trailing_bytes_is_corrupt(tmp_path):
    weights = zoo_copy(tmp_path) / "model.safetensors"
    with weights.open("ab") as f:
        f.write(b"\0" * 16)
    with pytest.raises(ModelLoadError, match=r"model\.safetensors is corrupt \(16 bytes after.*re-download"):
        load_model(weights.parent)
    cut(weights, 5)
    with pytest.raises(ModelLoadError, match=r"model\.safetensors is truncated or corrupt.*re-save"):
        load_model(weights.parent)


def test_sharded_checkpoint_names_a_truncated_or_missing_shard(tmp_path):
    model = tiny_model("llama")
    model.save_pretrained(tmp_path / "m", max_shard_size="200KB")
    index = json.loads((tmp_path / "m" / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 2
    loaded, _ = load_model(tmp_path / "m")  # whole shards load as before
    assert torch.equal(loaded.lm_head.weight, model.lm_head.weight)
    shard = tmp_path / "m" / shards[1]
    cut(shard, shard.stat().st_size - 1)
    with pytest.raises(ModelLoadError, match=rf"{shards[1]} is truncated.*re-download"):
        load_model(tmp_path / "m")
    shard.unlink()
    with pytest.raises(ModelLoadError, match=rf"missing the shard\(s\) {shards[1]} that model\.safetensors"
                                             r"\.index\.json lists; copy them"):
        load_model(tmp_path / "m")


def test_directory_without_tokenizer_is_refused_when_one_is_needed(tmp_path):
    tiny_model("qwen3").save_pretrained(tmp_path / "m")
    expected = r"has no tokenizer: none of tokenizer\.json, tokenizer_config\.json, tokenizer\.model, vocab\.json"
    with pytest.raises(ModelLoadError, match=expected + r".*copy the tokenizer files.*save_pretrained"):
        load_model(tmp_path / "m", require_tokenizer=True)
    with pytest.raises(ModelLoadError, match=expected):
        check_tokenizer(tmp_path / "m")
    assert load_model(tmp_path / "m")[1] is None  # callers that need no tokenizer still get None
    tiny_tokenizer().save_pretrained(tmp_path / "m")  # the fix the message gives
    check_tokenizer(tmp_path / "m")
    _, tokenizer = load_model(tmp_path / "m", require_tokenizer=True)
    assert tokenizer.convert_tokens_to_ids("t5") == 5


def test_incomplete_tokenizer_files_are_named_with_the_fix(tmp_path):
    model_dir = zoo_copy(tmp_path)
    _, tokenizer = load_model(model_dir, require_tokenizer=True)
    assert tokenizer.eos_token == "<|zoo_eos|>"
    (model_dir / "tokenizer.json").unlink()
    with pytest.raises(ModelLoadError, match=r"cannot load the tokenizer.*it holds tokenizer_config\.json.*"
                                             r"copy all tokenizer files.*save_pretrained"):
        load_model(model_dir)


def test_auto_and_cpu_devices_resolve():
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == resolve_device("CPU ") == "cpu"


@NO_CUDA
def test_cuda_without_cuda_is_refused_before_the_weights_are_read(tmp_path):
    for device in ("cuda", "cuda:0"):
        with pytest.raises(ModelLoadError, match="CUDA is not available on this machine; pass --device cpu"):
            resolve_device(device)
    weights = zoo_copy(tmp_path) / "model.safetensors"
    cut(weights, 100)  # the device is refused first: reading the weights would fail
    with pytest.raises(ModelLoadError, match="CUDA is not available"):
        load_model(weights.parent, device="cuda")
    assert load_model(tiny_model_dir(), device="auto")[0].device.type == "cpu"


def test_cuda_index_beyond_the_gpus_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda:1") == "cuda:1" and resolve_device("auto") == "cuda"
    with pytest.raises(ModelLoadError, match=r"'cuda:2' does not exist: this machine has 2 CUDA device\(s\), "
                                             "cuda:0 to cuda:1"):
        resolve_device("cuda:2")


@pytest.mark.parametrize("device", ["gpu", "cuda:x", "cuda:", "cuda:-1", "tpu", ""])
def test_unknown_device_lists_the_valid_forms(device):
    with pytest.raises(ModelLoadError, match=r"unknown device .*auto, cpu, cuda, cuda:N \(N a GPU index\) or mps"):
        resolve_device(device)


def test_seq_len_beyond_the_position_embeddings_is_refused():
    config = tiny_model("llama").config
    check_seq_len(config, 256)
    with pytest.raises(RecipeError, match="seq_len 4096 .* max_position_embeddings 256; pass a --seq-len at most 256"):
        check_seq_len(config, 4096)
    stored = json.loads((tiny_model_dir() / "config.json").read_text())
    limit = stored["max_position_embeddings"]
    with pytest.raises(RecipeError, match=f"at most {limit}"):
        check_seq_len(stored, limit + 1)
    check_seq_len({}, 10**6)  # no limit in the config: nothing to check


def test_export_directory_gets_the_umask_mode_and_is_still_replaced(tmp_path, umask):
    adapter = adapter_for(tiny_model("llama"))
    plan = DropPlan.dense(4)
    report = export(adapter, plan, None, tmp_path / "out")
    assert (report.path.stat().st_mode & 0o777) == 0o755
    umask(0o077)
    report = export(adapter, plan, None, tmp_path / "out", fmt="nemotron-nas", overwrite=True)
    assert (report.path.stat().st_mode & 0o777) == 0o700
    assert json.loads((report.path / "evopress_plan.json").read_text())["format"] == "nemotron-nas"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no scratch directory left beside it


def test_recipe_sparsity_is_a_list_in_model_order(tmp_path):
    adapter = adapter_for(tiny_model("llama"))
    names = [m.name for m in matrices(adapter)]
    layers = {name: round(0.3 + 0.005 * i, 6) for i, name in enumerate(names)}
    report = export(adapter, DropPlan.dense(4), None, tmp_path / "out")
    write_profile(report.path, layers, 0.5, 0.5, "sparsegpt")
    recipe = yaml.safe_load((report.path / RECIPE_FILE).read_text())
    args = recipe["sparsity_stage"]["sparsity_modifiers"]["SparseGPTModifier"]
    assert isinstance(args["sparsity"], list) and len(args["sparsity"]) == len(args["targets"]) == 28
    # llm-compressor pairs entry i with the i-th module of named_modules() that a target names
    matched = [name for name, _ in adapter.model.named_modules() if name in args["targets"]]
    assert matched == args["targets"]
    assert args["sparsity"] == [layers[name] for name in matched]
    assert args["mask_structure"] == "0:0"
