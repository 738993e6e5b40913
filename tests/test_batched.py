"""The fast evaluators (depth: batched; sparsity: stacked prefix) give the straightforward values and results."""

import dataclasses

import numpy as np
import pytest

from evopress.api import run
from evopress.compress.depth import depth_budget, depth_space, plan_from_genome
from evopress.config import BaselineConfig, DataConfig, RunConfig, SearchConfig
from evopress.eval.batched import BatchedDepthKL
from evopress.search.fidelity import Fidelity
from evopress.session import open_session

CFG = RunConfig(device="cpu", dtype="float32", export_format="none",
                data=DataConfig(seq_len=256, calibration_tokens=16_384, heldout_tokens=8_192),
                search=SearchConfig(generations=4, offspring=8, stages=((2, 1024), (1, 4096)), initial=8,
                                    initial_tokens=1024),
                baselines=BaselineConfig(names=()))


def test_values_equal_the_straightforward_objective():
    session = open_session(CFG, log=lambda s: None)
    adapter = session.adapter
    space = depth_space(adapter.num_blocks, adapter.sublayer_params("attn"), adapter.sublayer_params("mlp"))
    budget = depth_budget(space, 3)
    rng = np.random.default_rng(0)
    parent = budget.random_genome(space, rng)
    genomes = [parent] + [budget.mutate(space, parent, rng, 2) for _ in range(6)] + [budget.random_genome(space, rng)]
    simple = session.objective(lambda g: adapter.apply_plan(plan_from_genome(space, g)), CFG)
    batched = BatchedDepthKL(adapter, lambda g: plan_from_genome(space, g), session.calibration,
                             session.targets(0), batch_size=3, max_tokens=2048)
    for tokens in (700, 3000):  # one partial row; several row batches and candidate groups
        fidelity = Fidelity(tokens, 11)
        assert batched(genomes, fidelity) == pytest.approx(simple(genomes, fidelity), rel=1e-5, abs=1e-7)
    # the compiled path (traced graphs; inductor on a GPU, aot_eager here needs no C++ compiler)
    compiled = BatchedDepthKL(adapter, lambda g: plan_from_genome(space, g), session.calibration,
                              session.targets(0), batch_size=3, max_tokens=2048, compile="aot_eager")
    fidelity = Fidelity(3000, 11)
    assert compiled(genomes, fidelity) == pytest.approx(simple(genomes, fidelity), rel=1e-5, abs=1e-7)


@pytest.mark.slow
def test_search_result_is_the_same_with_either_evaluator(tmp_path):
    runs = {}
    for evaluator in ("simple", "batched"):
        search = dataclasses.replace(CFG.search, evaluator=evaluator)
        runs[evaluator] = run(dataclasses.replace(CFG, search=search, run_dir=str(tmp_path / evaluator)),
                              log=lambda s: None)
    assert runs["batched"].best["genome"] == runs["simple"].best["genome"]
    assert runs["batched"].best["fitness"] == pytest.approx(runs["simple"].best["fitness"], rel=1e-5)
    assert [h["fitness"] for h in runs["batched"].history] == pytest.approx(
        [h["fitness"] for h in runs["simple"].history], rel=1e-5)


def test_sparse_prefix_values_equal_the_straightforward_objective(tmp_path):
    import torch

    from evopress.compress.sparsegpt import sparsegpt_levels
    from evopress.compress.sparsity import SparsityGrid, sparsity_budget, sparsity_space, unit_table
    from evopress.database.bank import SparseBank
    from evopress.database.build import _hessians, build_sparsity_store, matrices
    from evopress.database.store import VariantStore
    from evopress.eval.prefix import PrefixKL
    from evopress.models.sequential import first_block_inputs

    session = open_session(CFG, log=lambda s: None)
    adapter = session.adapter
    units = unit_table(matrices(adapter), SparsityGrid(0.4, 0.8, 0.1, 0.05))
    store = VariantStore.create_or_open(tmp_path / "db", "m", {}, units)
    tokens = session.calibration[:8]
    build_sparsity_store(adapter, tokens, store, "sparsegpt", "cpu", log=lambda s: None)
    bank = SparseBank(adapter, store, cache_bytes=1 << 20)  # a small cache: decoding and eviction both run
    # the bank re-derives, from masks and factors, exactly the weights SparseGPT built
    hessians, _ = _hessians(adapter, 0, first_block_inputs(adapter, tokens, 8, "cpu", "cpu"), "cpu", "cpu")
    for short in ("self_attn.k_proj", "mlp.down_proj"):
        name = adapter.linear_name(0, short)
        unit = next(u for u in store.units if u["name"] == name)
        built = sparsegpt_levels(bank.dense[name], hessians[short], unit["pruned"])
        for i in range(len(unit["pruned"])):
            assert torch.equal(bank.weight(name, i), built[i]), (name, i)
    bank.restore()
    targets = session.targets(0)
    space = sparsity_space(store.units)
    budget = sparsity_budget(space, [u["shape"][0] * u["shape"][1] for u in store.units], 0.6)
    rng = np.random.default_rng(1)
    parent = budget.random_genome(space, rng)
    genomes = [parent] + [budget.mutate(space, parent, rng, 2) for _ in range(6)] + [parent]
    simple = session.objective(bank.apply, CFG)
    fidelity = Fidelity(1500, 5)
    expected = simple(genomes, fidelity)
    # all candidates stacked at once, several per LM-head slice; one candidate per group, its
    # positions in several slices; the KL compiled (aot_eager: no C++ compiler needed)
    for max_tokens, chunk, compile in ((1 << 16, None, None), (700, 300, None), (1 << 16, None, "aot_eager")):
        prefix = PrefixKL(adapter, bank, session.calibration, targets, batch_size=3, max_tokens=max_tokens,
                          chunk_tokens=chunk, compile=compile)
        assert prefix(genomes, fidelity) == pytest.approx(expected, rel=1e-5, abs=1e-7)
        assert prefix(genomes, fidelity, only=[4, 1]) == pytest.approx([expected[4], expected[1]],
                                                                       rel=1e-5, abs=1e-7)
    assert len(set(expected)) > 3  # the candidates really differ
