"""The one fast evaluator gives the straightforward objective's values for every registered method."""

import os

import numpy as np
import pytest
import torch

import tests.rtn_method  # noqa: F401  (registers the "rtn" method: the default block_step is covered too)
from evopress.api import run
from evopress.config import BaselineConfig, DataConfig, RunConfig, SearchConfig, replace
from evopress.eval.stacked import StackedKL
from evopress.methods import METHODS
from evopress.methods.gguf import GgufConfig
from evopress.methods.sparsity import SparsityConfig
from evopress.run import Run
from evopress.search.fidelity import Fidelity

CFG = RunConfig(device="cpu", dtype="float32", export_format="none",
                data=DataConfig(seq_len=256, calibration_tokens=16_384, heldout_tokens=8_192),
                search=SearchConfig(generations=4, offspring=8, stages=((2, 1024), (1, 4096)), initial=8,
                                    initial_tokens=1024),
                baselines=BaselineConfig(names=()))
OPTIONS = {"sparsify": SparsityConfig(target=0.6, grid=(0.4, 0.8, 0.1), small_step=0.05, database_tokens=2048),
           # the tiny model is 128 wide: the types with blocks of 32 (llama.cpp's library: the GGUF tier)
           "gguf": GgufConfig(target=7.0, levels=("q4_0", "q5_0", "q8_0"), embed_type="q8_0", output_type="q8_0")}


@pytest.fixture(scope="module", params=sorted(METHODS))
def prepared(request, tmp_path_factory) -> Run:
    """A method's run with its database built and its bank loaded."""
    name = request.param
    if name == "gguf" and os.environ.get("EVOPRESS_REQUIRE_RUNTIMES") != "1":
        pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (the GGUF tier runs it)")
    options = OPTIONS.get(name, METHODS[name].Config())
    cfg = replace(CFG, method=name, options=options, run_dir=str(tmp_path_factory.mktemp(name)))
    r = Run(cfg, log=lambda s: None).open()
    r.method.build(r)
    return r.prepare()


def _genomes(r: Run) -> list:
    """A parent, offspring of it, an unrelated genome and the parent again (a candidate equal to the reference)."""
    rng = np.random.default_rng(1)
    parent = r.budget.random_genome(r.space, rng)
    return [parent] + [r.budget.mutate(r.space, parent, rng, 2) for _ in range(6)] + \
        [r.budget.random_genome(r.space, rng), parent]


def test_values_equal_the_straightforward_objective(prepared):
    r = prepared
    s, genomes = r.session, _genomes(r)
    r.bank.apply(None)
    targets = s.targets(0)
    simple = s.objective(r.bank.apply, r.cfg)
    for tokens in (700, 3000):  # one partial row; several row batches
        fidelity = Fidelity(tokens, 11)
        expected = simple(genomes, fidelity)
        assert len(set(expected)) > 3  # the candidates really differ
        # all candidates in one stack, several per LM-head slice; one per stack, positions in several
        # slices; the KL and the steps compiled (aot_eager: traced graphs, no C++ compiler needed)
        for max_tokens, chunk, compile in ((1 << 16, None, None), (700, 300, None), (2048, None, "aot_eager")):
            stacked = StackedKL(s.adapter, r.bank, s.calibration, targets, batch_size=3, max_tokens=max_tokens,
                                chunk_tokens=chunk, compile=compile)
            assert stacked(genomes, fidelity) == pytest.approx(expected, rel=1e-5, abs=1e-7)
            assert stacked(genomes, fidelity, only=[4, 1]) == pytest.approx([expected[4], expected[1]],
                                                                           rel=1e-5, abs=1e-7)
    r.bank.apply(None)


@pytest.mark.parametrize("prepared", ["sparsify"], indirect=True)
def test_the_sparse_bank_rederives_exactly_the_weights_sparsegpt_built(prepared):
    from evopress.compress.sparsegpt import sparsegpt_levels
    from evopress.database.bank import SparseBank
    from evopress.database.build import _hessians
    from evopress.models.sequential import first_block_inputs

    r = prepared
    adapter, store = r.session.adapter, r.method.store(r.session)
    bank = SparseBank(adapter, store, cache_bytes=1 << 20)  # a small cache: decoding and eviction both run
    tokens = r.method._tokens(r.session)
    hessians, _ = _hessians(adapter, 0, first_block_inputs(adapter, tokens, 8, "cpu", "cpu"), "cpu", "cpu")
    for short in ("self_attn.k_proj", "mlp.down_proj"):
        name = adapter.linear_name(0, short)
        unit = next(u for u in store.units if u["name"] == name)
        built = sparsegpt_levels(bank.dense[name], hessians[short], unit["pruned"])
        for i in range(len(unit["pruned"])):
            assert torch.equal(bank.weight(name, i), built[i]), (name, i)
    bank.restore()


@pytest.mark.slow
def test_search_result_is_the_same_with_either_evaluator(tmp_path):
    runs = {}
    for evaluator in ("simple", "batched"):
        cfg = replace(CFG, search=replace(CFG.search, evaluator=evaluator), run_dir=str(tmp_path / evaluator))
        runs[evaluator] = run(cfg, log=lambda s: None)
    assert runs["batched"].best["genome"] == runs["simple"].best["genome"]
    assert runs["batched"].best["fitness"] == pytest.approx(runs["simple"].best["fitness"], rel=1e-5)
    assert [h["fitness"] for h in runs["batched"].history] == pytest.approx(
        [h["fitness"] for h in runs["simple"].history], rel=1e-5)
