"""`evopress train`: post-training of a compressed model (DarwinLM, arXiv 2502.07780, §3.3).

The student is the built-in tiny model with three attention and two MLP sublayers dropped, exported
in the `hf` format (their output projections zero) and in `nemotron-nas` (their weights absent);
the teacher is the dense tiny model. Token counts are tiny: these check behaviour, not quality.
"""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from evopress.cli.main import main
from evopress.compress.depth import DropPlan
from evopress.config import TrainConfig
from evopress.errors import DataError, ModelLoadError, RecipeError
from evopress.eval.metrics import perplexity
from evopress.export import export
from evopress.export.pruned import Cut, export_structured
from evopress.models import adapter_for, load_model
from evopress.train.post import PostConfig, _training_rows, post_train
from evopress.zoo import tiny_model_dir
from tests.test_models import one_thread  # noqa: F401  (autouse: one thread on busy shared cores)

PLAN = DropPlan(tuple(i in (3, 6, 9) for i in range(12)), tuple(i in (5, 10) for i in range(12)))
SMALL = dict(seq_len=64, heldout_tokens=0, checkpoint_every=3)


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    """The pruned tiny model, in both depth layouts: {"hf": dir, "nemotron-nas": dir}."""
    model, tokenizer = load_model(tiny_model_dir(), require_tokenizer=True)
    root = tmp_path_factory.mktemp("students")
    return {fmt: export(adapter_for(model), PLAN, tokenizer, root / fmt, fmt=fmt).path
            for fmt in ("hf", "nemotron-nas")}


def config(model, out, **changes) -> PostConfig:
    train = TrainConfig(**{"loss": "lm", "lr": 1e-3, "train_batch": 2, "warmup_steps": 2, "schedule": "cosine",
                           **changes.pop("train", {})})
    return PostConfig(model=str(model), out=str(out), **{"tokens": 8 * 2 * 64, **SMALL, **changes}, train=train)


def test_lm_training_lowers_the_loss_on_its_data_and_keeps_every_zero(student, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["train", str(student["hf"]), "--out", str(out), "--tokens", str(32 * 4 * 64), "--seq-len", "64",
                 "--train-batch", "4", "--lr", "1e-3", "--warmup-steps", "2", "--heldout-tokens", "0"])
    assert code == 0
    assert "trained 32 steps (8,192 tokens" in capsys.readouterr().out
    before, tokenizer = load_model(student["hf"], require_tokenizer=True)
    after = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()  # stock transformers
    rows, _ = _training_rows(config(student["hf"], out, tokens=32 * 4 * 64, train={"train_batch": 4}), tokenizer, 32)
    ppl_before, ppl_after = perplexity(before, rows), perplexity(after, rows)
    assert ppl_after < 0.8 * ppl_before  # measured: 33.5 -> 7.65
    old, new = load_file(student["hf"] / "model.safetensors"), load_file(out / "model.safetensors")
    assert list(old) == list(new) and all(new[k].dtype == old[k].dtype and new[k].shape == old[k].shape for k in old)
    assert all(torch.equal(new[k][old[k] == 0], torch.zeros_like(new[k][old[k] == 0])) for k in old)
    assert not torch.equal(new["model.layers.0.mlp.down_proj.weight"], old["model.layers.0.mlp.down_proj.weight"])
    assert torch.count_nonzero(new["model.layers.3.self_attn.o_proj.weight"]) == 0  # a dropped attention stays so
    for name in ("config.json", "tokenizer.json", "evopress_plan.json"):
        assert (out / name).read_bytes() == (student["hf"] / name).read_bytes()
    report = json.loads((out / "train_report.json").read_text())
    assert report["steps"] == 32 and report["tokens"] == 8192 and len(report["history"]) == 32
    assert (out / "loss.png").stat().st_size > 0 and "loss.png" in (out / "train_report.md").read_text()
    assert not list((out / "train-state").glob("*.safetensors"))  # the fp32 state goes once the model is out


def test_distillation_lowers_the_heldout_kl_to_the_dense_teacher(student, tmp_path):
    cfg = config(student["hf"], tmp_path / "kd", teacher=str(tiny_model_dir()), tokens=32 * 4 * 64,
                 heldout_tokens=4096, train={"loss": "kd", "lr": 3e-4, "train_batch": 4})
    report = post_train(cfg, log=lambda line: None)
    before, after = report["heldout"]["before"], report["heldout"]["after"]
    assert after["kl"] < 0.8 * before["kl"]  # measured: 0.0653 -> 0.0457 nats
    assert after["ppl"] < before["ppl"]  # measured: 82.97 -> 81.18
    assert report["heldout"]["protocol"]["n_seq"] == 64 and report["data"]["split"] == "train"
    assert "held-out KL to the teacher" in (tmp_path / "kd" / "train_report.md").read_text()


class Killed(Exception):
    pass


def kill_at(step):
    def hook(done):
        if done == step:
            raise Killed
    return hook


def test_a_killed_training_resumes_to_the_uninterrupted_weights(student, tmp_path):
    whole = post_train(config(student["hf"], tmp_path / "whole"), log=lambda line: None)
    cfg = config(student["hf"], tmp_path / "killed")
    with pytest.raises(Killed):
        post_train(cfg, log=lambda line: None, on_step=kill_at(5))
    state = json.loads((tmp_path / "killed" / "train-state" / "state.json").read_text())
    assert state["step"] == 3 and len(state["history"]) == 3  # the last checkpoint before the kill
    lines = []
    resumed = post_train(cfg, log=lines.append)
    assert "resuming" in lines[1] and "at step 3 of 8" in lines[1]
    weights = [(tmp_path / d / "model.safetensors").read_bytes() for d in ("whole", "killed")]
    assert weights[0] == weights[1]
    assert resumed["history"] == whole["history"]
    assert "already holds this training" in _log(post_train, cfg)  # done: a rerun does nothing
    with pytest.raises(RecipeError, match=r"other settings \(train.lr: 0.001 then, 0.002 now\).*--restart"):
        post_train(config(student["hf"], tmp_path / "killed", train={"lr": 2e-3}))
    again = post_train(config(student["hf"], tmp_path / "killed", restart=True, train={"lr": 2e-3}),
                       log=lambda line: None)
    assert again["settings"]["train"]["lr"] == 2e-3 and again["history"] != whole["history"]


def test_a_bf16_model_trains_on_fp32_masters_and_resumes_exactly(student, tmp_path):
    """The GPU path (the model in bf16, refreshed from fp32 masters), here on the CPU."""
    src = _copy(student["hf"], tmp_path / "bf16")
    AutoModelForCausalLM.from_pretrained(student["hf"], dtype=torch.bfloat16).save_pretrained(src)
    cfgs = [config(src, tmp_path / name, dtype="bfloat16") for name in ("whole", "killed")]
    post_train(cfgs[0], log=lambda line: None)
    with pytest.raises(Killed):
        post_train(cfgs[1], log=lambda line: None, on_step=kill_at(4))
    post_train(cfgs[1], log=lambda line: None)  # resumes at step 3: the model's bf16 copy from the masters
    weights = [(tmp_path / d / "model.safetensors").read_bytes() for d in ("whole", "killed")]
    assert weights[0] == weights[1]
    old, new = load_file(src / "model.safetensors"), load_file(tmp_path / "whole" / "model.safetensors")
    assert all(t.dtype == torch.bfloat16 for t in new.values()) and list(old) == list(new)
    assert all(torch.equal(new[k][old[k] == 0], torch.zeros_like(new[k][old[k] == 0])) for k in old)


def _log(fn, cfg) -> str:
    lines = []
    fn(cfg, log=lines.append)
    return "\n".join(lines)


def test_a_nemotron_nas_export_trains_in_its_own_layout(student, tmp_path):
    src, out = student["nemotron-nas"], tmp_path / "nas"
    post_train(config(src, out, tokens=4 * 2 * 64), log=lambda line: None)
    old, new = load_file(src / "model.safetensors"), load_file(out / "model.safetensors")
    assert list(old) == list(new) and not any(torch.equal(old[k], new[k]) for k in old if k.endswith("proj.weight"))
    assert not any(k.startswith("model.layers.3.self_attn") for k in new)  # a no_op attention has no weights
    loaded = AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True, dtype=torch.float32)
    assert type(loaded).__name__ == "DeciLMForCausalLM"
    assert {f.name for f in src.iterdir()} <= {f.name for f in out.iterdir()}


def test_a_pruned_export_with_per_layer_widths_trains_in_its_own_layout(tmp_path):
    """`evopress prune --export pruned`: half the query heads (one KV head) and MLP channels kept in
    even blocks, here cut by hand rather than by a search."""
    model, tokenizer = load_model(tiny_model_dir(), require_tokenizer=True)
    cuts = []
    for block, layer in enumerate(model.model.layers):
        heads, kv, channels = ((0, 1), (0,), tuple(range(256))) if block % 2 == 0 else ((0, 1, 2, 3), (0, 1), ())
        cols = torch.tensor([h * 32 + i for h in heads for i in range(32)])
        cuts.append({"attn": Cut(heads, layer.self_attn.o_proj.weight.detach()[:, cols], kv),
                     "mlp": Cut(channels, layer.mlp.down_proj.weight.detach()[:, list(channels)])})
    src = export_structured(adapter_for(model), cuts, tokenizer, tmp_path / "pruned")["path"]
    post_train(config(src, tmp_path / "out", tokens=4 * 2 * 64), log=lambda line: None)
    old, new = load_file(src / "model.safetensors"), load_file(tmp_path / "out" / "model.safetensors")
    assert list(old) == list(new) and new["model.layers.0.mlp.down_proj.weight"].shape == (128, 256)
    assert not torch.equal(old["model.layers.0.mlp.down_proj.weight"], new["model.layers.0.mlp.down_proj.weight"])
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "out", trust_remote_code=True, dtype=torch.float32)
    assert loaded.config.model_type == "evopress-pruned"


def test_bad_inputs_are_refused_before_any_weights_load(student, tmp_path, capsys):
    hf, tiny = student["hf"], tiny_model_dir()
    with pytest.raises(RecipeError, match="pass --teacher DENSE_DIR"):
        post_train(config(hf, tmp_path / "a", train={"loss": "kd"}))
    assert main(["train", str(hf), "--out", str(tmp_path / "a"), "--loss", "kd"]) == 2
    assert "evopress: error: --loss kd distils from a teacher" in capsys.readouterr().err

    quantized = _copy(hf, tmp_path / "q", quantization_config={"quant_method": "gptq", "bits": 4})
    with pytest.raises(RecipeError, match="gptq checkpoint .* Train the pruned or sparse model before quantizing"):
        post_train(config(quantized, tmp_path / "b"))
    other_vocab = _copy(tiny, tmp_path / "v", vocab_size=4096)
    with pytest.raises(RecipeError, match="vocabulary of 4096 tokens, the student 2048"):
        post_train(config(hf, tmp_path / "c", teacher=str(other_vocab), train={"loss": "kd"}))
    swapped = _copy(tiny, tmp_path / "t")
    vocab = json.loads((swapped / "tokenizer.json").read_text())
    ids = vocab["model"]["vocab"]
    (a, i), (b, j) = list(ids.items())[100:102]
    ids[a], ids[b] = j, i
    (swapped / "tokenizer.json").write_text(json.dumps(vocab))
    with pytest.raises(RecipeError, match="another tokenizer than the student"):
        post_train(config(hf, tmp_path / "c", teacher=str(swapped), train={"loss": "kd"}))
    with pytest.raises(DataError, match="neither an existing file or folder"):
        post_train(config(hf, tmp_path / "c", data=str(tmp_path / "no-such-text")))
    with pytest.raises(RecipeError, match="adapters .--lora-rank. are for a search's training stages"):
        post_train(config(hf, tmp_path / "c", train={"lora_rank": 4}))
    with pytest.raises(RecipeError, match="less than one batch"):
        post_train(config(hf, tmp_path / "d", tokens=100))
    with pytest.raises(RecipeError, match="holds the input model"):
        post_train(config(hf, hf))
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    with pytest.raises(RecipeError, match="not an earlier `evopress train` output"):
        post_train(config(hf, tmp_path / "taken"))
    foreign = _copy(student["nemotron-nas"], tmp_path / "code")
    (foreign / "modeling_nemotron_nas.py").write_text("import os  # anything\n")
    with pytest.raises(ModelLoadError, match="not the one evopress ships"):
        post_train(config(foreign, tmp_path / "e"))
    with pytest.raises(RecipeError, match="max_position_embeddings 256"):
        post_train(config(hf, tmp_path / "f", seq_len=512))
    assert not (tmp_path / "b").exists() and not (tmp_path / "c").exists()


def _copy(src, dst, **config_changes):
    """A copy of the model directory `src` with `config_changes` written into its config.json."""
    shutil.copytree(src, dst)
    config = json.loads((dst / "config.json").read_text())
    (dst / "config.json").write_text(json.dumps({**config, **config_changes}))
    return dst
