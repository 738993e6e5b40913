"""Searches spread over two processes (torchrun, gloo on CPU) give one process's result."""

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow

DEPTH = ["drop", "--device", "cpu", "--dtype", "float32", "--export", "none", "--baselines", "none",
        "--calibration-tokens", "16384", "--heldout-tokens", "4096", "--seq-len", "256", "--generations", "3",
        "--offspring", "8", "--stages", "2:1024,1:4096", "--initial", "8", "--initial-tokens", "1024"]


SPARSE = ["sparsify", "--device", "cpu", "--dtype", "float32", "--export", "none", "--baselines", "uniform",
          "--calibration-tokens", "8192", "--heldout-tokens", "4096", "--seq-len", "256", "--generations", "3",
          "--offspring", "8", "--stages", "3:1024,1:4096", "--grid", "0.5,0.7,0.05", "--target", "0.6"]
TWO = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]


def _run(prefix, run_dir, args=DEPTH):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([*prefix, "-m", "evopress.cli.main", *args, "--run-dir", str(run_dir)], check=True, env=env,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return json.loads((run_dir / "result.json").read_text())


def test_sparsity_search_over_two_processes_gives_the_one_process_result(tmp_path):
    one = _run([sys.executable], tmp_path / "one", SPARSE)
    two = _run(TWO, tmp_path / "two", SPARSE)
    for name in ("EvoPress", "uniform"):
        assert two["plans"][name]["genome"] == one["plans"][name]["genome"]
        assert two["plans"][name]["kl"] == one["plans"][name]["kl"]
    assert [h["fitness"] for h in two["history"]] == [h["fitness"] for h in one["history"]]
    assert two["plans"]["EvoPress"]["ppl"] == one["plans"]["EvoPress"]["ppl"]
    assert (tmp_path / "two" / "rank1" / "journal.jsonl").is_file()  # process 1 searched beside process 0
    assert (tmp_path / "two" / "database" / "manifest.json").is_file()  # one database, built by process 0


def test_two_processes_give_the_one_process_result(tmp_path):
    one = _run([sys.executable], tmp_path / "one")
    two = _run(TWO, tmp_path / "two")
    assert two["plans"]["EvoPress"]["genome"] == one["plans"]["EvoPress"]["genome"]
    assert [h["fitness"] for h in two["history"]] == [h["fitness"] for h in one["history"]]
    assert (tmp_path / "two" / "rank1" / "journal.jsonl").is_file()  # process 1 kept out of the run directory
