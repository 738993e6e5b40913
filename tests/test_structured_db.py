"""The structured database (database/structured.py) on the zoo model: exact parameters per level,
GQA-shaped attention levels, compact storage, and a build that resumes to identical bytes."""

import pytest
import torch

from evopress.compress.structured import MLP, Attention
from evopress.data.tokens import load_tokens
from evopress.database.build import build_store
from evopress.database.store import VariantStore
from evopress.database.structured import expand, stored_level, structured_block_levels, structured_units
from evopress.models import adapter_for, load_model
from evopress.zoo import tiny_model_dir


@pytest.fixture(scope="module")
def zoo():
    model, tokenizer = load_model(tiny_model_dir(), dtype="float32")
    return adapter_for(model), load_tokens("builtin", tokenizer, "train", 128, 4096)


def _build(adapter, tokens, path, fail_at=None):
    units = structured_units(adapter)
    store = VariantStore.create_or_open(path, "zoo", {"kind": "structured"}, units)
    levels = structured_block_levels({u["name"]: u for u in units})

    def block_levels(adapter, block, hessians):
        if block == fail_at:
            raise KeyboardInterrupt  # a kill in the middle of the build
        return levels(adapter, block, hessians)
    return build_store(adapter, tokens, store, block_levels, "structured", "cpu", 8, lambda s: None)


def test_levels_cost_their_exact_parameters_and_keep_gqa_shapes(zoo, tmp_path):
    adapter, tokens = zoo
    store = _build(adapter, tokens, tmp_path / "db")
    g = adapter.geometry()
    attn, mlp = Attention.of(g), MLP.of(g)
    per_group = g.num_heads // g.num_kv_heads
    for b in (0, 5):
        tensors, entry = store.read_block(b), store.manifest["blocks"][str(b)]
        for unit in (u for u in store.units if u["block"] == b):
            params, errors = entry["values"]["params"][unit["name"]], entry["errors"][unit["name"]]
            full = attn.full if unit["kind"] == "attn" else mlp.params(mlp.intermediate)
            assert params[0] == full and params[-1] == 0 and params == sorted(params, reverse=True)
            assert errors[0] == pytest.approx(0, abs=1e-6) and errors[-1] == pytest.approx(1, rel=1e-4)
            # each level removes at least its share of the sublayer's parameters
            if unit["kind"] == "attn":
                assert all(full - p >= r for p, r in zip(params, unit["removes"]))
            for i in range(len(params)):
                kept, w = stored_level(unit, i, tensors, g.head_dim)
                assert w.shape == (unit["shape"][0], len(kept))  # compact: kept columns only
                if unit["kind"] == "attn":
                    heads = sorted(set((kept // g.head_dim).tolist()))
                    kv = entry["values"]["kv_heads"][unit["name"]][i]
                    counts = [sum(h // per_group == k for h in heads) for k in kv]
                    assert len(set(counts)) <= 1 and attn.params(len(heads), len(kv)) == params[i]
                else:
                    assert mlp.params(len(kept)) == params[i]
            dense = adapter.linears(b)[unit["name"].split(f"{b}.", 1)[1]].weight
            kept, w = stored_level(unit, 0, tensors, g.head_dim)
            assert torch.equal(expand(w, kept, dense.shape[1]), dense)


def test_a_killed_build_resumes_to_identical_bytes(zoo, tmp_path):
    adapter, tokens = zoo
    whole = _build(adapter, tokens, tmp_path / "whole")
    with pytest.raises(KeyboardInterrupt):
        _build(adapter, tokens, tmp_path / "resumed", fail_at=4)
    assert not VariantStore.open(tmp_path / "resumed").complete
    _build(adapter, tokens, tmp_path / "resumed")
    for p in sorted(whole.path.iterdir()):
        assert p.read_bytes() == (tmp_path / "resumed" / p.name).read_bytes(), p.name
