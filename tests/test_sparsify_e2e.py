"""Sparsity end to end on the built-in tiny model: database, search, baselines, evaluation, export."""

import os
import signal
import subprocess
import sys
from dataclasses import replace

import pytest
import torch

from evopress.api import run as sparsify
from evopress.config import DataConfig, RunConfig, SearchConfig
from evopress.methods.sparsity import SparsityConfig
from evopress.errors import DatabaseError, InfeasibleBudgetError, RecipeError

pytestmark = pytest.mark.slow

GRID = (0.45, 0.85, 0.025)


def _config(run_dir, db, target, **search):
    return RunConfig(method="sparsify", run_dir=str(run_dir), device="cpu",
                     data=DataConfig(seq_len=256, calibration_tokens=32_768, heldout_tokens=65_536),
                     options=SparsityConfig(target=target, database=str(db), grid=GRID),
                     search=SearchConfig(**{"generations": 20, "offspring": 12,
                                            "stages": ((2, 2048), (1, 8192)), **search}))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("sparsify")
    return {t: sparsify(_config(root / f"run{t}", root / "db", t / 100), log=lambda s: None) for t in (60, 70)}


@pytest.mark.parametrize("target", [60, 70])
def test_evopress_beats_uniform_and_owl(runs, target):
    ppl = {name: p["ppl"] for name, p in runs[target].plans.items()}
    print(f"held-out perplexity at {target}%: {ppl} (dense {runs[target].dense_ppl:.3f})")
    assert ppl["EvoPress"] < ppl["uniform"]
    assert ppl["EvoPress"] < ppl["OWL"]
    assert runs[target].dense_ppl < ppl["EvoPress"]
    assert runs[target].plans["EvoPress"]["kl"] < runs[target].plans["uniform"]["kl"]


def test_store_is_about_a_bit_per_weight_and_level(runs):
    from evopress.database.store import VariantStore

    store = VariantStore.open(runs[60].config.options.database)
    bits = sum(u["shape"][0] * u["shape"][1] * len(u["levels"]) for u in store.units)
    factors = sum(u["shape"][1] * (u["shape"][1] + 1) // 2 * 4 for u in store.units)  # at most one per layer
    assert bits / 8 < store.nbytes() <= bits / 8 + factors + 2**20, (store.nbytes(), bits / 8)
    assert store.nbytes() <= bits * 4 / 10  # a tenth of a dense float32 copy per level


@pytest.mark.parametrize("target", [60, 70])
def test_export_loads_with_stock_transformers_at_the_chosen_sparsity(runs, target):
    from transformers import AutoModelForCausalLM

    from evopress.compress.sparsity import SparsityGrid
    from evopress.database.bank import SparseBank
    from evopress.database.store import VariantStore
    from evopress.models import adapter_for, load_model
    from evopress.session import resolve_model

    run = runs[target]
    model, _ = load_model(resolve_model("zoo:tiny"), dtype="float32")
    store = VariantStore.open(run.config.options.database)
    bank = SparseBank(adapter_for(model), store)
    bank.apply(run.plans["EvoPress"]["genome"])
    exported = AutoModelForCausalLM.from_pretrained(run.run_dir / "model", dtype=torch.float32)
    ids = torch.randint(0, model.config.vocab_size, (2, 64), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(exported(input_ids=ids).logits, model(input_ids=ids).logits)
    measured, profile = run.export["measured"], run.plans["EvoPress"]["genome"]
    levels = {u["name"]: u["levels"][g] for u, g in zip(store.units, profile)}
    assert measured.keys() == levels.keys()
    step = SparsityGrid(*GRID).step
    assert all(abs(measured[n] - s) < 1e-3 for n, s in levels.items())  # each layer is its configured level
    assert all(abs(s - target / 100) <= 0.4 + step for s in levels.values())
    assert abs(run.export["measured_overall"] - target / 100) <= 0.001
    for name in ("evopress_sparsity.json", "recipe.yaml", "config.json"):
        assert (run.run_dir / "model" / name).is_file()
    assert {"summary.txt", "profile.png", "convergence.png", "result.json", "plans.json"} <= \
        {p.name for p in run.run_dir.iterdir()}


def test_steps_run_alone_and_errors_are_clear(runs, tmp_path):
    run = runs[60]
    again = sparsify(run.config, log=lambda s: None, steps=("eval",))  # from plans.json, no search
    assert again.plans["EvoPress"]["genome"] == run.plans["EvoPress"]["genome"]
    assert again.plans["EvoPress"]["ppl"] == pytest.approx(run.plans["EvoPress"]["ppl"])
    cfg = _config(tmp_path / "r", run.config.options.database, 0.95)
    with pytest.raises(RecipeError, match="target"):
        sparsify(replace(cfg, options=SparsityConfig(target=1.5)), log=lambda s: None)
    with pytest.raises(InfeasibleBudgetError, match="outside the database grid"):
        sparsify(cfg, log=lambda s: None, steps=("search",))
    other = _config(tmp_path / "r2", run.config.options.database, 0.6)
    other = replace(other, options=replace(other.options, builder="wanda"))
    with pytest.raises(DatabaseError, match="another config"):
        sparsify(other, log=lambda s: None, steps=("db",))
    shared = _config(tmp_path / "r3", run.config.options.database, 0.6)
    shared = replace(shared, options=replace(shared.options, grid=(0.5, 0.7, 0.05)))
    with pytest.raises(DatabaseError, match=r"pass --grid 0.45,0.85,0.025 --small-step 0.0125 to use it"):
        sparsify(shared, log=lambda s: None)  # the stored grid is named, before anything is built
    assert not (tmp_path / "r3" / "journal.jsonl").exists()


def _build(db, run_dir, kill_after_block=None):
    cmd = [sys.executable, "-m", "evopress.cli.main", "sparsify", "--steps", "db", "--device", "cpu",
           "--run-dir", str(run_dir), "--db", str(db), "--grid", "0.5,0.7,0.05", "--target", "0.6",
           "--calibration-tokens", "8192", "--heldout-tokens", "4096"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    for line in proc.stdout:
        if kill_after_block and f"block {kill_after_block}/" in line:
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait()
    return proc.returncode


def test_killed_build_resumes_to_identical_bytes(tmp_path):
    assert _build(tmp_path / "whole", tmp_path / "a") == 0
    assert _build(tmp_path / "resumed", tmp_path / "b", kill_after_block=5) == -signal.SIGKILL
    done = sorted(p.name for p in (tmp_path / "resumed").glob("block_*.safetensors"))
    assert 5 <= len(done) < 12, done  # killed mid-way, finished blocks on disk
    assert _build(tmp_path / "resumed", tmp_path / "b") == 0
    whole = sorted((tmp_path / "whole").iterdir())
    assert [p.name for p in whole] == sorted(p.name for p in (tmp_path / "resumed").iterdir())
    for p in whole:
        assert p.read_bytes() == (tmp_path / "resumed" / p.name).read_bytes(), p.name
