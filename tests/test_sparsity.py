"""Sparsity building blocks: level solvers, the compact codec, the variant store, the cost budget, DP."""

import itertools
import json

import numpy as np
import pytest
import torch

from evopress.compress.owl import block_sparsities
from evopress.compress.sparsegpt import (inverse_factor, levels_from_masks, magnitude_levels, prune_levels,
                                         relative_errors, sparsegpt_levels, wanda_levels)
from evopress.compress.sparsity import (Matrix, SparsityGrid, numels, overall_sparsity, sparsity_budget,
                                        sparsity_space, uniform_genome, unit_table)
from evopress.database.codec import decode, encode, pack, pack_upper, unpack, unpack_upper
from evopress.database.store import VariantStore
from evopress.errors import DatabaseError, InfeasibleBudgetError
from evopress.search import CostBudget, Space, Unit
from evopress.search.knapsack import knapsack


def _layer(rows=24, cols=40, samples=512, seed=0):
    """A weight and the Hessian of correlated inputs (so SparseGPT's updates matter)."""
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(cols, cols, generator=g) / cols**0.5 + torch.eye(cols)
    x = torch.randn(samples, cols, generator=g) @ mix
    return torch.randn(rows, cols, generator=g), 2 * x.T @ x / samples


@pytest.mark.parametrize("builder", ["sparsegpt", "wanda", "magnitude"])
def test_every_level_prunes_exactly_its_count(builder):
    w, h = _layer()
    pruned = [0, 1, 100, 480, 481, 900]
    levels = prune_levels(builder, w, h, pruned, blocksize=16)
    assert levels.shape == (len(pruned), *w.shape)
    assert [int((lv == 0).sum()) for lv in levels] == pruned
    torch.testing.assert_close(levels[0], w)


def test_batched_levels_equal_one_level_at_a_time():
    w, h = _layer()
    pruned = [200, 480, 700]
    batched = sparsegpt_levels(w, h, pruned, blocksize=16)
    for i, count in enumerate(pruned):
        torch.testing.assert_close(batched[i], sparsegpt_levels(w, h, [count], blocksize=16)[0])


def test_sparsegpt_reconstructs_better_than_wanda_or_magnitude():
    w, h = _layer()
    pruned = [480]  # 50%
    err = {name: relative_errors(w, fn(), h)[0] for name, fn in {
        "sparsegpt": lambda: sparsegpt_levels(w, h, pruned, blocksize=16),
        "wanda": lambda: wanda_levels(w, h, pruned),
        "magnitude": lambda: magnitude_levels(w, pruned)}.items()}
    assert err["sparsegpt"] < min(err["wanda"], err["magnitude"]), err


def test_codec_round_trips_and_is_compact():
    w, h = _layer()
    level = sparsegpt_levels(w, h, [720], blocksize=16)[0].to(torch.bfloat16)
    mask, values = encode(level)
    assert mask.dtype == torch.uint8 and mask.numel() == w.numel() // 8
    assert values.numel() == w.numel() - 720
    assert torch.equal(decode(mask, values, w.shape), level)
    flags = torch.rand(13) > 0.5
    assert torch.equal(unpack(pack(flags), 13), flags)
    factor = torch.randn(9, 9).triu()
    assert pack_upper(factor).numel() == 45 and torch.equal(unpack_upper(pack_upper(factor)), factor)


def test_sweep_with_stored_masks_reproduces_the_built_weights():
    w, h = _layer()
    h[:, 3] = h[3, :] = 0  # a dead input channel
    built = sparsegpt_levels(w, h, [300, 720, 900], blocksize=16)
    again = levels_from_masks("sparsegpt", w, built != 0, inverse_factor(h), blocksize=16)
    assert torch.equal(again, built)
    magnitude = magnitude_levels(w, [300, 720])
    assert torch.equal(levels_from_masks("magnitude", w, magnitude != 0), magnitude)


def test_grid_is_finer_for_small_matrices_and_costs_are_exact():
    grid = SparsityGrid(0.4, 0.6, 0.05, 0.025)
    table = unit_table([Matrix("big", 0, (64, 64)), Matrix("small", 0, (16, 64))], grid)
    assert table[0]["levels"] == [0.4, 0.45, 0.5, 0.55, 0.6]
    assert len(table[1]["levels"]) == 9
    space = sparsity_space(table)
    assert space.units[0].costs == tuple(float(4096 - round(s * 4096)) for s in table[0]["levels"])


def _space(sizes, grid=SparsityGrid(0.3, 0.9, 0.05, 0.025)):
    return sparsity_space(unit_table([Matrix(f"m{i}", i, s) for i, s in enumerate(sizes)], grid))


def test_budget_mutation_and_random_genomes_stay_inside_the_band():
    sizes = [(64, 64), (16, 64), (64, 160), (160, 64), (32, 32)] * 3
    space = _space(sizes)
    n = numels(unit_table([Matrix(f"m{i}", i, s) for i, s in enumerate(sizes)], SparsityGrid(0.3, 0.9, 0.05)))
    budget = sparsity_budget(space, n, 0.6)
    rng = np.random.default_rng(0)
    genome = uniform_genome(space, budget, 0.6, rng)
    assert budget.satisfied(space, genome)
    assert 0.6 - 1e-4 <= overall_sparsity(space, genome, n) <= 0.6 + space.max_step() / sum(n)
    for _ in range(300):
        child = budget.mutate(space, genome, rng, switches=3)
        assert budget.satisfied(space, child)
        genome = child
    assert all(budget.satisfied(space, budget.random_genome(space, rng)) for _ in range(50))


def test_budget_errors_name_the_problem():
    space = _space([(64, 64), (16, 64)])
    with pytest.raises(InfeasibleBudgetError, match="outside the database's levels"):
        sparsity_budget(space, [4096, 1024], 0.95)
    with pytest.raises(InfeasibleBudgetError, match="largest level step"):
        CostBudget(2000.0, 2001.0).validate(space)


def test_knapsack_matches_brute_force():
    rng = np.random.default_rng(3)
    space = Space(tuple(Unit(f"u{i}", "g", tuple(str(k) for k in range(4)),
                             tuple(float(c) for c in sorted(rng.integers(1, 50, 4))[::-1]))
                        for i in range(5)))
    errors = [sorted(rng.random(4)) for _ in range(5)]  # cheaper (higher level) = worse
    for high in (60.0, 90.0, 130.0):
        best = min((sum(errors[u][g] for u, g in enumerate(genome)), genome)
                   for genome in itertools.product(range(4), repeat=5) if space.cost(genome) <= high)
        found = knapsack(space, errors, high, slack=0.0)
        assert space.cost(found) <= high
        assert sum(errors[u][g] for u, g in enumerate(found)) == pytest.approx(best[0])


def test_owl_sparsities_average_the_target_and_spare_outlier_blocks():
    s = block_sparsities([0.01, 0.05, 0.02, 0.03], 0.7, 0.08)
    assert sum(s) / 4 == pytest.approx(0.7)
    assert s[1] == min(s) and s[0] == max(s) and max(s) - min(s) == pytest.approx(0.16)


def _store(path, config=None, model="fp-a"):
    units = [{"name": "m", "block": 0, "shape": [2, 8], "levels": [0.5], "pruned": [8]}]
    return VariantStore.create_or_open(path, model, config or {"builder": "sparsegpt"}, units)


def test_store_rejects_mismatched_corrupt_and_foreign_directories(tmp_path):
    store = _store(tmp_path / "db")
    with pytest.raises(DatabaseError, match="incomplete"):
        store.read_block(0)
    mask, _ = encode(torch.tensor([[1.0, 0, 2, 0, 0, 3, 0, 4], [0, 5, 0, 6, 7, 0, 8, 0]]))
    store.write_block(0, {"m:0:mask": mask}, {"m": [0.1]}, values={"builder": "magnitude", "blocksize": 128})
    assert _store(tmp_path / "db").complete  # reopens with the same settings
    with pytest.raises(DatabaseError, match="another config"):
        _store(tmp_path / "db", {"builder": "wanda"})
    with pytest.raises(DatabaseError, match="another model"):
        _store(tmp_path / "db", model="fp-b")
    block = tmp_path / "db" / "block_0000.safetensors"
    data = bytearray(block.read_bytes())
    data[-1] ^= 0xFF
    block.write_bytes(bytes(data))
    with pytest.raises(DatabaseError, match="checksum"):
        VariantStore.open(tmp_path / "db").read_block(0)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("x")
    with pytest.raises(DatabaseError, match="not an evopress database"):
        _store(tmp_path / "other")
    manifest = json.loads((tmp_path / "db" / "manifest.json").read_text())
    assert manifest["format"] and manifest["version"] and manifest["model"] == "fp-a"
