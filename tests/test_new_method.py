"""A new compression kind is one file: a method from the tests folder runs the whole skeleton."""

import json

import pytest
import torch
import yaml

import tests.rtn_method  # noqa: F401  (registers the "rtn" method)
from evopress.cli.main import main, parser

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def rtn_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("rtn")
    recipe = {"method": "rtn", "model": "zoo:tiny", "device": "cpu", "run_dir": str(root / "run"),
              "data": {"calibration_tokens": 8192, "heldout_tokens": 8192},
              "search": {"generations": 6, "offspring": 6, "stages": [[2, 1024], [1, 4096]]},
              "baselines": {"random_samples": 6},
              "rtn": {"bits": 6.0}}
    (root / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    assert main(["run", str(root / "recipe.yaml")]) == 0
    return root / "run"


def test_the_method_gets_a_subcommand_with_its_flags():
    rtn = parser()._subparsers._group_actions[0].choices["rtn"]
    flags = {a.option_strings[0] for a in rtn._actions if a.option_strings}
    assert {"--bits", "--group", "--baselines", "--generations", "--model", "--run-dir"} <= flags


def test_search_shared_baselines_evaluation_and_report(rtn_run):
    plans = json.loads((rtn_run / "plans.json").read_text())
    assert plans["done"] == ["db", "search", "eval", "export"]
    assert set(plans["plans"]) == {"EvoPress", "random best-of-6", "DP (layer errors)"}  # uniform: no such genome
    for name, p in plans["plans"].items():
        assert set(p["levels"].values()) <= {"int8", "int4"}
        assert 6.0 - 0.3 <= p["bits/weight"] <= 6.0, name  # under the budget, by at most one level step
        assert p["ppl"] > plans["dense"]["ppl"] and p["kl"] > 0
    assert plans["plans"]["EvoPress"]["kl"] <= plans["plans"]["random best-of-6"]["kl"]
    summary = (rtn_run / "summary.txt").read_text()
    assert "EvoPress" in summary and "bits/weight" in summary
    result = json.loads((rtn_run / "result.json").read_text())
    assert result["method"] == "rtn" and isinstance(result["export"]["bytes_on_disk"], int)
    assert (rtn_run / "convergence.png").read_bytes()[:4] == b"\x89PNG"


def test_export_holds_the_chosen_levels(rtn_run):
    from transformers import AutoModelForCausalLM

    from evopress.models import adapter_for, load_model
    from evopress.session import resolve_model
    from tests.rtn_method import BITS, rtn

    plans = json.loads((rtn_run / "plans.json").read_text())["plans"]["EvoPress"]
    exported = AutoModelForCausalLM.from_pretrained(rtn_run / "model", dtype=torch.float32)
    model, _ = load_model(resolve_model("zoo:tiny"), dtype="float32")
    adapter = adapter_for(model)
    state = exported.state_dict()
    for b in range(adapter.num_blocks):
        for n, m in adapter.linears(b).items():
            name = adapter.linear_name(b, n)
            bits = BITS[("int8", "int4").index(plans["levels"][name])]
            torch.testing.assert_close(state[name + ".weight"], rtn(m.weight.data, bits, 32))
