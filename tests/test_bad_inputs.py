"""Every bad input is a clear error naming the problem and the fix, raised before expensive work;
reruns, re-exports and a second process on one run directory behave as a user expects."""

import json
import subprocess
import sys

import pytest
import yaml

from evopress.cli.main import main

pytestmark = pytest.mark.slow

SMALL = ["--device", "cpu", "--calibration-tokens", "4096", "--heldout-tokens", "4096", "--generations", "2",
         "--offspring", "4", "--stages", "2:512,1:1024", "--initial", "4", "--initial-tokens", "512",
         "--random-samples", "4"]


def cli(capsys, *args):
    try:
        code = main([str(a) for a in args])
    except SystemExit as e:  # argparse's own errors: usage and a message, exit status 2
        code = e.code
    out = capsys.readouterr()
    assert "Traceback" not in out.err
    return code, out.out, out.err


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    assert main(["drop", "--run-dir", str(run_dir), *SMALL]) == 0
    return run_dir


@pytest.mark.parametrize("stages", ["0:1024", "2:0", "2:512,1"])
def test_bad_stages_flag(capsys, tmp_path, stages):
    code, _, err = cli(capsys, "drop", "--run-dir", tmp_path / "r", "--stages", stages)
    assert code == 2 and "stages" in err and "2:2048,1:32768" in err
    assert not (tmp_path / "r").exists()  # refused before anything was written


def test_seq_len_beyond_the_model_is_refused(capsys, tmp_path):
    code, _, err = cli(capsys, "drop", "--run-dir", tmp_path / "r", "--seq-len", 4096, "--device", "cpu")
    assert code == 2 and "4096" in err and "256" in err and "--seq-len" in err


def test_cuda_without_cuda_is_refused(capsys, tmp_path):
    code, _, err = cli(capsys, "drop", "--run-dir", tmp_path / "r", "--device", "cuda")
    assert code == 2 and "CUDA" in err and "--device cpu" in err


def test_empty_recipe_is_refused(capsys, tmp_path):
    (tmp_path / "empty.yaml").write_text("")
    code, _, err = cli(capsys, "run", tmp_path / "empty.yaml")
    assert code == 2 and "is empty" in err


def test_export_format_the_model_cannot_take_is_refused_before_the_search(capsys, tmp_path):
    from transformers import AutoTokenizer, Qwen3Config, Qwen3ForCausalLM

    from evopress.zoo import tiny_model_dir

    tok = AutoTokenizer.from_pretrained(tiny_model_dir())
    config = Qwen3Config(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=256)
    Qwen3ForCausalLM(config).save_pretrained(tmp_path / "qwen3")
    tok.save_pretrained(tmp_path / "qwen3")
    code, _, err = cli(capsys, "drop", "--model", tmp_path / "qwen3", "--run-dir", tmp_path / "r",
                       "--export", "nemotron-nas", *SMALL)
    assert code == 2 and "q_norm/k_norm" in err and "format 'hf'" in err
    assert not (tmp_path / "r" / "journal.jsonl").exists()


def test_sparsity_target_outside_the_grid_is_refused_up_front(capsys, tmp_path):
    code, _, err = cli(capsys, "sparsify", "--run-dir", tmp_path / "r", "--grid", "0.4,0.6,0.05", "--target", 0.7)
    assert code == 2 and "outside the database grid" in err
    assert not (tmp_path / "r").exists()


def test_a_finished_run_is_not_redone(capsys, finished):
    journal = (finished / "journal.jsonl").read_text()
    stamp = (finished / "model" / "model.safetensors").stat().st_mtime_ns
    code, out, _ = cli(capsys, "drop", "--run-dir", finished, *SMALL)
    assert code == 0 and "already done" in out and "EvoPress" in out
    assert (finished / "journal.jsonl").read_text() == journal
    assert (finished / "model" / "model.safetensors").stat().st_mtime_ns == stamp


def test_export_twice_replaces_the_earlier_export(capsys, finished):
    for _ in range(2):
        code, out, _ = cli(capsys, "export", "--run-dir", finished, "--format", "nemotron-nas")
        assert code == 0
    assert (finished / "model-nemotron-nas" / "config.json").is_file()
    assert not [p for p in finished.iterdir() if p.name.startswith(".model-nemotron-nas")]  # no scratch left


def test_eval_takes_the_run_directory_or_its_plans_json(capsys, finished):
    plans = json.loads((finished / "plans.json").read_text())["plans"]
    for plan in (finished, finished / "plans.json"):
        code, out, _ = cli(capsys, "eval", "--plan", plan, "--tokens", 4096, "--device", "cpu")
        assert code == 0 and f"{plans['EvoPress']['ppl']:.4f}" in out
    code, _, err = cli(capsys, "eval", "--plan", finished / "config.yaml")
    assert code == 2 and "plans.json" in err
    code, _, err = cli(capsys, "eval", "--plan", finished, "--name", "nope")
    assert code == 2 and "EvoPress" in err


def test_every_plan_is_scored_on_the_same_tokens(finished):
    from evopress.run import SCORE_DRAW

    plans = json.loads((finished / "plans.json").read_text())["plans"]
    scored = {}
    for line in (finished / "journal.jsonl").read_text().splitlines():
        e = json.loads(line)
        if e["type"] == "eval" and e["draw"] == SCORE_DRAW and e["tokens"] == 1024:
            scored.update({tuple(g): v for g, v in zip(e["genomes"], e["fitness"])})
    assert {name: scored[tuple(p["genome"])] for name, p in plans.items()} == \
        {name: p["kl"] for name, p in plans.items()}
    result = json.loads((finished / "result.json").read_text())
    assert isinstance(result["export"]["bytes_on_disk"], int) and isinstance(result["dense_ppl"], float)


def test_a_second_process_on_one_run_directory_is_refused(capsys, tmp_path):
    run_dir = tmp_path / "busy"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from evopress.rundir import RunDir; lock = RunDir(sys.argv[1]).lock(); "
        "lock.__enter__(); print('held', flush=True); time.sleep(120)"), str(run_dir)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        code, _, err = cli(capsys, "drop", "--run-dir", run_dir, *SMALL)
        assert code == 2 and f"process {holder.pid}" in err and "another --run-dir" in err
        assert not (run_dir / "journal.jsonl").exists()
    finally:
        holder.kill()
        holder.wait()


def test_a_recipe_names_its_model_as_an_absolute_path(tmp_path, finished):
    recipe = yaml.safe_load((finished / "config.yaml").read_text())
    assert recipe["run_dir"] == str(finished.resolve()) and recipe["model"] == "zoo:tiny"
