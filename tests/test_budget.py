"""A budget names its unit: `--budget 4GB` for depth is the size of the exported weights, exactly."""

import json

import numpy as np
import pytest

from evopress.api import run
from evopress.cli.main import main
from evopress.config import BaselineConfig, DataConfig, RunConfig, SearchConfig, parse_bytes
from evopress.export.directory import tensor_bytes
from evopress.methods.depth import DropConfig
from evopress.search import CostBudget, Space, Unit, band_below
from evopress.search.knapsack import knapsack


def test_sizes_in_decimal_and_binary_units():
    assert parse_bytes("4GB") == 4 * 10**9
    assert parse_bytes("3.5GiB") == int(3.5 * 2**30)
    assert parse_bytes("700 mb") == 700 * 10**6
    assert parse_bytes("123456") == 123456
    for bad in ("4 parsecs", "-1GB", "0", "GB", ""):
        with pytest.raises(ValueError, match="4GB"):
            parse_bytes(bad)


def test_a_base_cost_counts_in_every_budget_and_baseline():
    units = tuple(Unit(f"u{i}", "g", ("keep", "drop"), (10.0, 0.0)) for i in range(6))
    space = Space(units, base=100.0)
    assert space.cost((0,) * 6) == 160.0 and space.cost((1,) * 6) == 100.0
    budget = band_below(135.0, space)  # [125, 135]: three units kept
    budget.validate(space)
    rng = np.random.default_rng(0)
    for _ in range(20):
        genome = budget.random_genome(space, rng)
        assert space.cost(genome) == 130.0 and budget.satisfied(space, genome)
        assert space.cost(budget.mutate(space, genome, rng, 2)) == 130.0
    with pytest.raises(Exception, match="outside"):
        CostBudget(80.0, 95.0).validate(space)  # below the base: nothing reaches it
    errors = [[0.0, float(i)] for i in range(6)]  # dropping unit i costs error i
    assert knapsack(space, errors, 135.0, 5.0) == (1, 1, 1, 0, 0, 0)


SMALL = RunConfig(device="cpu", export_format="nemotron-nas",
                  data=DataConfig(calibration_tokens=8192, heldout_tokens=8192),
                  search=SearchConfig(generations=3, offspring=6, stages=((2, 1024), (1, 2048)), initial=6,
                                      initial_tokens=1024),
                  baselines=BaselineConfig(names=("shortgpt", "random"), random_samples=4))


@pytest.mark.slow
@pytest.mark.parametrize("fmt, granularity", [("nemotron-nas", "sublayer"), ("hf", "block")])
def test_a_byte_budget_is_the_exported_weights_size(tmp_path, fmt, granularity):
    from dataclasses import replace

    dense = replace(SMALL, export_format=fmt, options=DropConfig(granularity=granularity, target=1),
                    run_dir=str(tmp_path / "dense"), baselines=BaselineConfig(names=()))
    first = run(dense, log=lambda s: None, steps=["search", "export"])  # one block (or sublayer per kind) dropped
    one_drop = tensor_bytes(tmp_path / "dense" / "model")
    assert first.best["weights MB"] * 1e6 == pytest.approx(one_drop, abs=0.5)  # known before the export
    budget = str(int(one_drop * 0.8))
    cfg = replace(dense, budget=budget, run_dir=str(tmp_path / "budget"), baselines=SMALL.baselines)
    result = run(cfg, log=lambda s: None)
    best = result.best
    assert best["cost_unit"] == "bytes"
    assert best["cost"] == result.export["weight_bytes"] == tensor_bytes(tmp_path / "budget" / "model")
    assert best["weights MB"] * 1e6 == pytest.approx(best["cost"], abs=0.5)
    assert best["params M"] * 1e6 * 4 == pytest.approx(best["cost"], abs=2)  # float32 weights: 4 bytes each
    assert best["cost"] <= int(budget) < one_drop
    for name, plan in result.plans.items():
        assert plan["cost"] <= int(budget), name
    stored = json.loads((tmp_path / "budget" / "result.json").read_text())
    assert stored["config"]["budget"] == budget


@pytest.mark.slow
@pytest.mark.parametrize("args, words", [
    (["sparsify", "--budget", "1GB"], ["takes no byte budget", "--target"]),
    (["drop", "--budget", "1GB"], ["--granularity block", "nemotron-nas"]),
    (["drop", "--budget", "4 parsecs"], ["budget", "4GB"]),
    (["drop", "--budget", "1TB", "--export", "nemotron-nas"], ["nothing to drop"]),
    (["drop", "--budget", "1KB", "--export", "nemotron-nas"], ["give a larger budget"]),
])
def test_a_byte_budget_it_cannot_meet_is_refused(capsys, tmp_path, args, words):
    code = main([*args, "--run-dir", str(tmp_path / "r"), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    for word in words:
        assert word in err
    assert not (tmp_path / "r" / "journal.jsonl").exists()  # nothing searched
