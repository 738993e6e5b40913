"""lm-eval runs `evopress eval --tasks` on exported models, offline.

The built-in tiny model is exported twice with `evopress.export` (hf format): dense, and with 25%
of its sublayers dropped (3 attentions and 3 MLPs: blocks 6, 7 and 9 whole, the plan ShortGPT picks
on this model). In the lm-eval environment (.ci/env/lmeval.sh: evopress installed from this
repository with its `eval` extra) `evopress eval --model DIR --tasks zoo` runs the shipped suite
with the hub switched off (conftest's Runtime sets HF_*_OFFLINE). The dense model must beat chance
(0.25) on zoo_completion by three standard errors, the pruned one must score below it and have the
higher byte perplexity, and the record must carry lm-eval's version and the sha256 of each task's
YAML and data, equal to the files in this repository (so the installed package carries them
unchanged). A folder of task YAMLs given by path runs too, and `--tasks zeroshot5` with an empty
datasets cache fails with exit code 2 and a message that names the missing data set and the fix.
"""

from __future__ import annotations

import hashlib
import json

import pytest

from evopress.compress.depth import DropPlan
from evopress.export import export
from evopress.tasks import suite_dir

NUM_BLOCKS = 12  # zoo:tiny
PRUNED = DropPlan.blocks(NUM_BLOCKS, (6, 7, 9))  # 3 of 12 attentions and 3 of 12 MLPs: 25%
REPO_SUITE = suite_dir("zoo")  # the repository's files: the main environment has evopress editable
CHOICE = "zoo_completion"
HELDOUT_TOKENS = 8192  # the held-out perplexity evopress eval prints first; kept small, it is not under test here


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def lmeval(runtime):
    return runtime("lmeval")  # first, so a missing environment skips before anything is exported


@pytest.fixture(scope="module")
def models(lmeval, tmp_path_factory):
    from evopress.models import adapter_for, load_model
    from evopress.zoo import tiny_model_dir

    model, tokenizer = load_model(tiny_model_dir(), dtype="float32")
    adapter = adapter_for(model)
    assert adapter.num_blocks == NUM_BLOCKS
    root = tmp_path_factory.mktemp("lmeval_models")
    return {"dense": export(adapter, DropPlan.dense(NUM_BLOCKS), tokenizer, root / "dense", "hf").path,
            "pruned": export(adapter, PRUNED, tokenizer, root / "pruned", "hf").path}


def evopress(lmeval, where, *args, **env) -> dict:
    """Run the evopress CLI in the lm-eval environment; its exit code, output, seconds and results."""
    where.mkdir(parents=True, exist_ok=True)
    out = where / "results.json"
    lmeval.run("lmeval_cli.py", where / "record.json", *(f"{k}={v}" for k, v in env.items()), "--", *args,
               "--out", out)
    record = json.loads((where / "record.json").read_text())
    record["results"] = json.loads(out.read_text()) if out.is_file() else None
    return record


@pytest.fixture(scope="module")
def own_folder(tmp_path_factory):
    """A user's folder of task YAMLs: the first 40 completion items under another name, by absolute path."""
    folder = tmp_path_factory.mktemp("own_tasks")
    data = folder / "items.jsonl"
    data.write_text("".join((REPO_SUITE / f"{CHOICE}.jsonl").read_text().splitlines(keepends=True)[:40]))
    text = (REPO_SUITE / f"{CHOICE}.yaml").read_text()
    (folder / "mine.yaml").write_text(text.replace(f"task: {CHOICE}", "task: my_completion")
                                      .replace(f"test: {CHOICE}.jsonl", f"test: {data}"))
    return folder


@pytest.fixture(scope="module")
def runs(lmeval, models, own_folder, tmp_path_factory):
    root = tmp_path_factory.mktemp("lmeval_runs")
    out = {"dense": evopress(lmeval, root / "dense", "eval", "--model", models["dense"], "--tasks",
                             f"zoo,{own_folder}", "--tokens", HELDOUT_TOKENS),
           "pruned": evopress(lmeval, root / "pruned", "eval", "--model", models["pruned"], "--tasks", "zoo",
                              "--tokens", HELDOUT_TOKENS)}
    for name, run in out.items():
        assert run["rc"] == 0, f"{name}: evopress eval failed ({run['rc']})\n{run['stdout'][-3000:]}\n{run['stderr'][-6000:]}"
        print(f"{name}: {run['seconds']} s\n" + run["stdout"][run["stdout"].index("lm-eval "):])
    return out


def choice(run, metric):
    m = run["results"]["tasks"]["results"][CHOICE][metric]
    return m["value"], m["stderr"]


@pytest.mark.parametrize("metric", ["acc", "acc_norm"])
def test_dense_beats_chance_by_three_standard_errors(runs, metric):
    value, stderr = choice(runs["dense"], metric)
    assert 0 < stderr < 0.05
    assert value - 3 * stderr > 0.25, (value, stderr)
    assert f"{CHOICE}  {metric} {value:.3f} ± {stderr:.3f}" in runs["dense"]["stdout"]  # printed with its stderr


@pytest.mark.parametrize("metric", ["acc", "acc_norm"])
def test_pruned_scores_below_dense(runs, metric):
    assert choice(runs["pruned"], metric)[0] < choice(runs["dense"], metric)[0]


def test_pruned_has_the_higher_byte_perplexity(runs):
    ppl = {name: run["results"]["tasks"]["results"]["zoo_rolling"]["byte_perplexity"]["value"]
           for name, run in runs.items()}
    assert 1 < ppl["dense"] < ppl["pruned"], ppl


def test_record_holds_the_lm_eval_version_and_the_hashes_of_config_and_data(runs):
    for run in runs.values():
        tasks = run["results"]["tasks"]
        assert tasks["lm_eval"] == run["lm_eval"] and tasks["lm_eval"].startswith("0.4.")
        assert tasks["n-samples"][CHOICE]["effective"] == len((REPO_SUITE / f"{CHOICE}.jsonl").read_text().splitlines())
        for task in ("zoo_completion", "zoo_rolling"):
            record = tasks["hashes"][task]
            assert record["yaml_sha256"] == sha256(REPO_SUITE / f"{task}.yaml")  # the installed YAML is the repo's
            assert list(record["data"].values()) == [sha256(REPO_SUITE / f"{task}.jsonl")]


def test_a_folder_of_task_yamls_runs_by_path(runs, own_folder):
    tasks = runs["dense"]["results"]["tasks"]
    assert tasks["n-samples"]["my_completion"]["effective"] == 40
    assert tasks["hashes"]["my_completion"]["yaml_sha256"] == sha256(own_folder / "mine.yaml")
    assert tasks["hashes"]["my_completion"]["data"] == {str(own_folder / "items.jsonl"): sha256(own_folder / "items.jsonl")}
    assert 0 < tasks["results"]["my_completion"]["acc"]["value"] < 1


def test_zeroshot5_without_its_data_offline_names_the_data_set(lmeval, models, tmp_path):
    empty = tmp_path / "empty-cache"
    run = evopress(lmeval, tmp_path / "run", "eval", "--model", models["dense"], "--tasks", "zeroshot5",
                   "--tokens", 2048, HF_HOME=empty, HF_DATASETS_CACHE=empty / "datasets")
    print(f"zeroshot5 offline: {run['seconds']} s, exit {run['rc']}: {run['stderr'].strip().splitlines()[-1]}")
    assert run["rc"] == 2 and run["results"] is None
    message = run["stderr"].strip().splitlines()[-1]
    assert message.startswith("evopress: error: task 'arc_easy' needs the data set allenai/ai2_arc (ARC-Easy)")
    assert "HF_DATASETS_CACHE" in message and "--tasks zoo" in message
    assert "Traceback" not in run["stderr"]
