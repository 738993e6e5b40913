"""End to end on the built-in tiny model: search, baselines, evaluation, export, resume, errors."""

import dataclasses
import json
import signal
import subprocess
import sys
import time

import pytest
import torch

from evopress.api import run
from evopress.cli.main import DEMO
from evopress.compress.depth import DropPlan
from evopress.config import BaselineConfig, DataConfig, RunConfig, SearchConfig
from evopress.errors import DataError, InfeasibleBudgetError, UnsupportedModelError
from evopress.methods.depth import DropConfig

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("demo")
    return run(dataclasses.replace(DEMO, run_dir=str(run_dir)), log=lambda s: None)


def plan_of(record) -> DropPlan:
    """The drop plan of a plans.json record, from its readable per-block levels."""
    levels = [record["levels"][str(i)] for i in range(len(record["levels"]))]
    return DropPlan(tuple("attn" in d for d in levels), tuple("mlp" in d for d in levels))


def test_evopress_beats_shortgpt_and_random_best_of_64(demo_run):
    ppl = {name: p["ppl"] for name, p in demo_run.plans.items()}
    assert set(ppl) == {"EvoPress", "ShortGPT", "random best-of-64"}
    assert plan_of(demo_run.best).attn.count(True) == plan_of(demo_run.best).mlp.count(True) == 3
    assert ppl["EvoPress"] < ppl["ShortGPT"]
    assert ppl["EvoPress"] < ppl["random best-of-64"]
    assert demo_run.dense_ppl < ppl["EvoPress"]


def test_run_directory_holds_everything(demo_run):
    names = {p.name for p in demo_run.run_dir.iterdir()}
    assert {"config.yaml", "journal.jsonl", "plans.json", "result.json", "summary.txt",
            "profile.png", "convergence.png", "model"} <= names
    for png in ("profile.png", "convergence.png"):
        assert (demo_run.run_dir / png).read_bytes()[:4] == b"\x89PNG"
    result = json.loads((demo_run.run_dir / "result.json").read_text())
    assert result["protocol"]["heldout_ppl"]["windows"] == "non-overlapping"


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_export_loads_with_stock_transformers_and_matches(demo_run):
    from transformers import AutoModelForCausalLM

    from evopress.models import adapter_for, load_model
    from evopress.session import resolve_model

    model, _ = load_model(resolve_model("zoo:tiny"), dtype="float32")
    plan = plan_of(demo_run.best)
    adapter_for(model).apply_plan(plan)
    exported = AutoModelForCausalLM.from_pretrained(demo_run.run_dir / "model", dtype=torch.float32)
    ids = torch.randint(0, model.config.vocab_size, (2, 64), generator=torch.Generator().manual_seed(0))
    assert exported.config.num_hidden_layers == model.config.num_hidden_layers - len(plan.removed_blocks)
    torch.testing.assert_close(_logits(exported, ids), _logits(model, ids), atol=1e-4, rtol=1e-4)


def test_nemotron_nas_export_is_smaller_and_matches(demo_run, tmp_path):
    from transformers import AutoModelForCausalLM

    from evopress.evaluate import export_run

    report = export_run(demo_run.run_dir, "nemotron-nas", tmp_path / "nas")
    hf_bytes = sum(p.stat().st_size for p in (demo_run.run_dir / "model").glob("*.safetensors"))
    nas_bytes = sum(p.stat().st_size for p in (tmp_path / "nas").glob("*.safetensors"))
    assert nas_bytes < hf_bytes
    nas = AutoModelForCausalLM.from_pretrained(report["path"], trust_remote_code=True, dtype=torch.float32)
    hf = AutoModelForCausalLM.from_pretrained(demo_run.run_dir / "model", dtype=torch.float32)
    ids = torch.randint(0, hf.config.vocab_size, (1, 48), generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(_logits(nas, ids), _logits(hf, ids), atol=1e-4, rtol=1e-4)


SMALL = ["--generations", "8", "--offspring", "8", "--stages", "2:256,1:2048", "--initial", "8",
         "--initial-tokens", "256", "--calibration-tokens", "8192", "--heldout-tokens", "4096",
         "--baselines", "none", "--export", "none", "--device", "cpu"]


def _cli(run_dir, extra=()):
    return [sys.executable, "-m", "evopress.cli.main", "drop", "--run-dir", str(run_dir), *SMALL, *extra]


def _generations(path):
    if not path.exists():
        return 0
    return sum('"phase": "evolve"' in line and '"record"' in line for line in path.read_text().splitlines())


def test_killed_search_resumes_to_the_uninterrupted_result(tmp_path):
    whole = tmp_path / "whole"
    subprocess.run(_cli(whole), check=True, capture_output=True)
    killed = tmp_path / "killed"
    proc = subprocess.Popen(_cli(killed), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and _generations(killed / "journal.jsonl") < 3 and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert 3 <= _generations(killed / "journal.jsonl") < 8, "the kill must land mid-search"
    subprocess.run(_cli(killed), check=True, capture_output=True)
    a, b = (json.loads((d / "result.json").read_text()) for d in (whole, killed))
    key = lambda run: [(n, p["genome"], p["fitness"], p["kl"], p["ppl"]) for n, p in run["plans"].items()]  # noqa: E731
    assert key(a) == key(b)
    # the resumed run's search seconds count the part before the kill too (journaled per generation)
    assert b["plans"]["EvoPress"]["seconds"] == pytest.approx(sum(h["seconds"] for h in b["history"]))
    assert all(h["seconds"] > 0 for h in b["history"])
    assert [h["parent"] for h in a["history"]] == [h["parent"] for h in b["history"]]


def _small(tmp_path, **changes):
    cfg = RunConfig(run_dir=str(tmp_path / "run"), export_format="none",
                    data=DataConfig(calibration_tokens=4096, heldout_tokens=2048),
                    search=SearchConfig(generations=1, offspring=2, stages=((1, 512),), initial=2, initial_tokens=256),
                    baselines=BaselineConfig(names=()))
    return dataclasses.replace(cfg, **changes)


def drop(cfg, log):
    return run(cfg, log)


def test_unsupported_architecture_is_a_clear_error(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=64)).save_pretrained(tmp_path / "gpt2")
    with pytest.raises(UnsupportedModelError, match="llama, mistral, qwen2, qwen3"):
        drop(_small(tmp_path, model=str(tmp_path / "gpt2")), log=lambda s: None)


def test_stage_tokens_beyond_the_calibration_set_fail_before_any_work(tmp_path):
    cfg = _small(tmp_path)
    lines = []
    # 4096 calibration tokens in rows of 256 predict 16 x 255 = 4080: a stage of 4096 cannot be scored
    too_many = dataclasses.replace(cfg, search=dataclasses.replace(cfg.search, stages=((1, 4096),)))
    with pytest.raises(DataError, match="predicts 4,080 .* raise --calibration-tokens to 4,352"):
        drop(too_many, log=lines.append)
    assert not any("teacher" in x or "gen" in x for x in lines)
    ok = dataclasses.replace(cfg, search=dataclasses.replace(cfg.search, stages=((1, 4080),)))
    assert drop(ok, log=lines.append).plans["EvoPress"]["kl"] > 0


def test_infeasible_target_is_a_clear_error(tmp_path):
    cfg = _small(tmp_path)
    with pytest.raises(InfeasibleBudgetError, match="choose between 1 and"):
        drop(dataclasses.replace(cfg, options=DropConfig(target=40)), log=lambda s: None)


def test_empty_data_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    cfg = _small(tmp_path)
    with pytest.raises(DataError):
        drop(dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, calibration=str(tmp_path / "empty"))),
             log=lambda s: None)
