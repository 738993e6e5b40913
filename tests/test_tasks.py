"""The shipped `zoo` task suite and `evopress eval --tasks`, without lm-eval (the main environment).

The suite's files must be what `python -m evopress.tasks.build` writes, byte for byte, and each
item must come from a held-out file and be right about its answer. `--tasks` parsing, the shipped
YAMLs' copies, the errors for a missing lm-eval and a missing data set, and the reading of lm-eval's
result keys are checked here; tests/integration/test_lmeval.py runs lm-eval itself.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from evopress.cli.main import main
from evopress.data import HELDOUT, split_of
from evopress.data.corpus import stdlib_root
from evopress.data.files import read_text
from evopress.errors import DataError, EvopressError, RecipeError
from evopress.eval.downstream import check_tasks, metrics, missing_data, task_lines
from evopress.tasks import ZEROSHOT5, copy_suite, folder_tasks, parse_tasks, suite_dir

SUITE = suite_dir("zoo")
MANIFEST = json.loads((SUITE / "MANIFEST.json").read_text())


def source_path(key: str) -> Path:
    assert key.startswith("stdlib/"), key  # the tiny model's corpus: no site-packages
    return stdlib_root() / key[len("stdlib/"):]


def changed_sources() -> list[str]:
    """Held-out files whose bytes on this machine differ from those the suite was built from."""
    return [key for key, digest in MANIFEST["sources"].items()
            if not source_path(key).is_file() or hashlib.sha256(source_path(key).read_bytes()).hexdigest() != digest]


def items(name: str) -> list[dict]:
    return [json.loads(line) for line in (SUITE / f"{name}.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_suite_regenerates_byte_identically(tmp_path):
    changed = changed_sources()
    if changed:  # another Python release: its standard library is other text, so other items
        pytest.skip(f"the suite was built from Python {MANIFEST['python']}'s files; here {len(changed)} differ, "
                    f"e.g. {changed[0]}")
    from evopress.tasks.build import write_suite

    written = write_suite(tmp_path)
    assert sorted(written) == sorted(p.name for p in SUITE.iterdir() if p.is_file())
    for name, path in written.items():
        assert path.read_bytes() == (SUITE / name).read_bytes(), f"{name} differs: rerun python -m evopress.tasks.build"


def test_yamls_parse_and_name_files_that_exist():
    assert folder_tasks(SUITE) == ["zoo_completion", "zoo_rolling"]
    for path in sorted(SUITE.glob("*.yaml")):
        cfg = yaml.safe_load(path.read_text())
        assert cfg["task"] == path.stem and cfg["dataset_path"] == "json"
        for data in cfg["dataset_kwargs"]["data_files"].values():
            assert (SUITE / data).is_file(), data
        assert len(items(cfg["task"])) == MANIFEST["tasks"][cfg["task"]] >= 100


def test_items_come_from_heldout_files_and_have_the_right_answer():
    completion, rolling = items("zoo_completion"), items("zoo_rolling")
    assert all(split_of(item["source"]) == HELDOUT for item in completion + rolling)  # never a file a zoo model saw
    if changed_sources():
        pytest.skip("the held-out files differ from those the suite was built from (another Python release)")
    lines = {key: [line.rstrip() for line in read_text(source_path(key)).split("\n")] for key in MANIFEST["sources"]}
    for item in completion:
        file = lines[item["source"]]
        choices = item["choices"]
        assert len(set(choices)) == 4 and 0 <= item["label"] < 4
        # the context ends with the line's beginning; the labelled choice is its true rest
        assert item["context"].split("\n")[-1] + choices[item["label"]] == file[item["line"] - 1]
        wrong = [c for k, c in enumerate(choices) if k != item["label"]]
        assert not any(line.endswith(c) for c in wrong for line in file), item["id"]  # none secretly right
    for item in rolling:
        start = item["line"] - 1
        assert item["text"] == "\n".join(lines[item["source"]][start:start + item["text"].count("\n")]) + "\n"


def test_labels_are_spread_over_the_four_positions():
    counts = [0] * 4
    for item in items("zoo_completion"):
        counts[item["label"]] += 1
    assert min(counts) > len(items("zoo_completion")) / 8, counts  # a position bias would pass as skill


def test_parse_presets_names_and_mixtures():
    assert parse_tasks("zoo").names == ("zoo_completion", "zoo_rolling")
    assert parse_tasks("zoo").suites == ("zoo",)
    assert parse_tasks("zeroshot5").names == ZEROSHOT5
    assert parse_tasks(" arc_easy , piqa ").names == ("arc_easy", "piqa")
    both = parse_tasks("zoo,arc_easy,zoo")
    assert both.names == ("zoo_completion", "zoo_rolling", "arc_easy") and both.suites == ("zoo", "zoo")


def write_yaml(path: Path, text: str):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_parse_a_folder_of_yamls(tmp_path):
    write_yaml(tmp_path / "a.yaml", "task: mine_a\ndataset_path: json\nprocess_results: !function utils.process\n")
    write_yaml(tmp_path / "sub" / "b.yaml", "task: mine_b\ndataset_path: json\n")
    write_yaml(tmp_path / "c.yaml", "task: mine_c\ninclude: a.yaml\n")
    write_yaml(tmp_path / "g.yaml", "group: mine\ntask: [mine_b, mine_c]\n")
    spec = parse_tasks(str(tmp_path))
    assert spec.names == ("mine", "mine_a")  # b and c run through their group
    assert spec.folders == (tmp_path.resolve(),) and spec.suites == ()


@pytest.mark.parametrize("text, says", [
    ("zoo,,piqa", "empty item"),
    ("./no/such/folder", "not a folder"),
    ("tasks.yaml", "not a folder"),
])
def test_parse_errors(text, says):
    with pytest.raises(RecipeError, match=says):
        parse_tasks(text)


def test_a_folder_without_tasks_is_an_error(tmp_path):
    write_yaml(tmp_path / "notes.yaml", "just: data\n")
    with pytest.raises(RecipeError, match="defines no lm-eval task"):
        parse_tasks(str(tmp_path))


def test_copy_suite_points_at_the_installed_data(tmp_path):
    copies = copy_suite("zoo", tmp_path)
    assert sorted(p.name for p in copies) == ["zoo_completion.yaml", "zoo_rolling.yaml"]
    for copy, original in copies.items():
        new, old = yaml.safe_load(copy.read_text()), yaml.safe_load(original.read_text())
        for split, data in new["dataset_kwargs"]["data_files"].items():
            assert Path(data).is_absolute() and Path(data) == SUITE / old["dataset_kwargs"]["data_files"][split]
        new.pop("dataset_kwargs"), old.pop("dataset_kwargs")
        assert new == old  # nothing else changes


def test_missing_lm_eval_is_a_clear_error(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # import lm_eval now raises ImportError
    with pytest.raises(EvopressError, match=r"pip install evopress\[eval\]"):
        check_tasks("zoo")
    # the CLI says so with exit code 2, before it loads any model
    assert main(["eval", "--model", "/no/such/model", "--tasks", "zoo"]) == 2
    assert "pip install evopress[eval]" in capsys.readouterr().err


def test_a_bad_tasks_value_fails_before_the_model_loads(capsys):
    assert main(["eval", "--model", "/no/such/model", "--tasks", "./no/such/folder"]) == 2
    assert "not a folder" in capsys.readouterr().err


def fake_manager(**entries):
    """A stand-in for lm-eval's TaskManager: its task_index of entries with a kind, a cfg and tags."""
    index = {name: SimpleNamespace(kind=SimpleNamespace(name=kind), cfg=cfg, tags=set(tags))
             for name, (kind, cfg, tags) in entries.items()}
    return SimpleNamespace(task_index=index)


ARC = ("TASK", {"task": "arc_easy", "dataset_path": "allenai/ai2_arc", "dataset_name": "ARC-Easy"}, ())
OFFLINE = ConnectionError("Couldn't reach 'allenai/ai2_arc' on the Hub (OfflineModeIsEnabled)")


def test_missing_hub_data_names_the_data_set_and_the_fix():
    error = missing_data(fake_manager(arc_easy=ARC), "arc_easy", OFFLINE)
    assert isinstance(error, DataError)
    text = str(error)
    assert "task 'arc_easy' needs the data set allenai/ai2_arc (ARC-Easy)" in text
    assert "OfflineModeIsEnabled" in text and "HF_DATASETS_CACHE" in text and "once with a network" in text


def test_missing_data_of_a_group_or_tag_names_its_members_data():
    manager = fake_manager(arc_easy=ARC, arc=("GROUP", {"group": "arc", "task": ["arc_easy"]}, ()),
                           ai2_arc=("TAG", None, ("arc_easy",)))
    for name in ("arc", "ai2_arc"):
        assert "allenai/ai2_arc (ARC-Easy)" in str(missing_data(manager, name, OFFLINE))


def test_missing_local_data_files_say_to_check_the_paths():
    local = ("TASK", {"dataset_path": "json", "dataset_kwargs": {"data_files": {"test": "rel/items.jsonl"}}}, ())
    error = missing_data(fake_manager(mine=local), "mine", FileNotFoundError("Unable to find 'rel/items.jsonl'"))
    assert isinstance(error, DataError) and "rel/items.jsonl" in str(error) and "working directory" in str(error)


def test_other_load_failures_are_not_called_missing_data():
    error = missing_data(fake_manager(arc_easy=ARC), "arc_easy", ValueError("bad doc_to_text"))
    assert isinstance(error, RecipeError) and "bad doc_to_text" in str(error)


def test_metrics_and_lines_from_lm_eval_results():
    results = {"zoo_completion": {"alias": "zoo_completion", "acc,none": 0.4, "acc_stderr,none": 0.0245,
                                  "acc_norm,none": 0.45, "acc_norm_stderr,none": 0.0249},
               "zoo_rolling": {"byte_perplexity,none": 4.08, "byte_perplexity_stderr,none": "N/A"}}
    parsed = metrics(results)
    assert parsed["zoo_completion"]["acc"] == {"value": 0.4, "stderr": 0.0245}
    assert parsed["zoo_rolling"]["byte_perplexity"] == {"value": 4.08, "stderr": None}
    lines = task_lines({"results": parsed, "lm_eval": "0.4.13", "limit": None})
    assert lines[0] == "lm-eval 0.4.13, 0-shot"
    assert "zoo_completion  acc 0.400 ± 0.025" in lines and "zoo_completion  acc_norm 0.450 ± 0.025" in lines
    assert any(line.startswith("zoo_rolling     byte_perplexity 4.080") for line in lines)
