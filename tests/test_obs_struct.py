"""Structured OBS (compress/obs_struct.py): the update is the least-squares optimum, removals
compose, the reported loss is the error it causes, and attention levels keep GQA shapes."""

import pytest
import torch

from evopress.compress.obs_struct import Eliminator, channel_levels, head_levels


def _layer(rows=24, cols=48, tokens=512, seed=0, scale=None):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(tokens, cols, generator=g) * (torch.rand(cols, generator=g) + 0.2 if scale is None else scale)
    return torch.randn(rows, cols, generator=g), 2 * x.T @ x / tokens


def _error(w, w_new, h):
    d = (w_new - w).double()
    return 0.5 * torch.trace(d @ h.double() @ d.T).item()


def test_removal_is_the_least_squares_optimum_and_removals_compose():
    w, h = _layer()
    e = Eliminator(w, h, damp=0.0)
    first, second = torch.tensor([3, 7, 8]), torch.tensor([20, 21, 40, 41])
    loss = e.loss(first[None]).item()
    e.remove(first)
    loss += e.loss(second[None]).item()
    e.remove(second)
    keep = torch.ones(w.shape[1], dtype=torch.bool)
    keep[torch.cat([first, second])] = False
    hd = h.double()
    best = w.double() @ hd[:, keep] @ torch.linalg.inv(hd[keep][:, keep])  # W H_:,R H_RR⁻¹
    assert torch.allclose(e.w[:, keep].double(), best, rtol=1e-3, atol=1e-3)
    assert e.w[:, ~keep].abs().max() == 0
    # the losses the greedy adds up are the error the removals cause
    assert loss == pytest.approx(_error(w, e.w, h), rel=1e-3)


def test_channel_levels_count_exactly_and_beat_no_update_and_magnitude():
    w, h = _layer()
    levels = channel_levels(w, h, [0, 8, 16, 40, 48], group=8, damp=0.0)
    assert [len(idx) for idx, _ in levels] == [48, 40, 32, 8, 0]
    errors = []
    for idx, kept in levels:
        full = torch.zeros_like(w)
        full[:, idx] = kept
        errors.append(_error(w, full, h))
        if 0 < len(idx) < 48:
            zeroed = torch.zeros_like(w)
            zeroed[:, idx] = w[:, idx]  # the same channels kept, no update
            assert errors[-1] < _error(w, zeroed, h)
            by_norm = torch.zeros_like(w)
            top = w.norm(dim=0).topk(len(idx)).indices
            by_norm[:, top] = w[:, top]
            assert errors[-1] < _error(w, by_norm, h)
    assert errors == sorted(errors) and errors[0] == 0
    with pytest.raises(ValueError, match="must ascend"):
        channel_levels(w, h, [16, 8])


def test_head_levels_keep_the_same_query_heads_per_kept_kv_group():
    heads, kv, hd, hidden = 8, 2, 4, 16
    w, h = _layer(rows=hidden, cols=heads * hd, seed=1)
    head = 2 * hidden * hd
    total = head * (heads + kv)
    levels = head_levels(w, h, heads, kv, [0, head, 3 * head, 6 * head, total], damp=0.01)
    assert levels[0].heads == tuple(range(heads)) and levels[0].kv_heads == (0, 1)
    assert levels[-1].heads == () and levels[-1].kv_heads == () and levels[-1].o_weight.shape == (hidden, 0)
    sizes = []
    for lv in levels:
        per_group = [sum(q // (heads // kv) == g for q in lv.heads) for g in lv.kv_heads]
        assert len(set(per_group)) <= 1 and all(n > 0 for n in per_group)
        assert all(q // (heads // kv) in lv.kv_heads for q in lv.heads)
        assert lv.o_weight.shape == (hidden, len(lv.heads) * hd)
        sizes.append(len(lv.heads) * head + len(lv.kv_heads) * head)
    assert sizes == sorted(sizes, reverse=True)
    assert all(total - s >= r for s, r in zip(sizes, [0, head, 3 * head, 6 * head, total]))


def test_an_unused_kv_group_goes_first_with_its_kv_head():
    heads, kv, hd, hidden = 4, 2, 4, 8
    scale = torch.ones(heads * hd)
    scale[8:] = 1e-3  # the heads of KV group 1 barely see any input
    w, h = _layer(rows=hidden, cols=heads * hd, seed=2, scale=scale)
    first = head_levels(w, h, heads, kv, [1], damp=0.0)[0]
    assert first.heads == (0, 1) and first.kv_heads == (0,)
