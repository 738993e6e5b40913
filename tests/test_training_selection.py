"""Training a compressed model (fp32 masters, frozen zeros) and training-aware selection (DarwinLM §3.3).

On the zoo model's prune database: the trainer moves the weights, keeps pruned columns at zero,
and gives the bank's tensors back untouched; a training stage scores a candidate after training
on the stage's sequences, the same value every time it is asked; a search with training stages
killed mid-way resumes to the result of an uninterrupted one."""

import dataclasses

import pytest
import torch

from evopress.api import run
from evopress.config import BaselineConfig, DataConfig, RunConfig, SearchConfig, TrainConfig, from_dict, replace
from evopress.errors import DataError, RecipeError
from evopress.eval.trained import TrainedObjective
from evopress.methods.structured import StructuredConfig
from evopress.run import Run
from evopress.search.fidelity import Fidelity
from evopress.train import Masters, lm_loss, sequences, train
from evopress.train.lora import Adapters

STAGES = ((2, 512, 512), (1, 1024, 1024))


def _config(run_dir, db, **changes):
    cfg = RunConfig(method="prune", run_dir=str(run_dir), device="cpu", dtype="float32", export_format="none",
                    data=DataConfig(seq_len=256, calibration_tokens=8192, heldout_tokens=8192, training_tokens=4096),
                    options=StructuredConfig(target=0.5, database=str(db)), baselines=BaselineConfig(names=()),
                    search=SearchConfig(generations=2, offspring=4, stages=STAGES, initial=0))
    return replace(cfg, **changes)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Run:
    root = tmp_path_factory.mktemp("trained")
    r = Run(_config(root / "run", root / "db"), log=lambda s: None).open()
    r.method.build(r)
    return r.prepare()


def _pruned(r: Run):
    return r.method.uniform(r)


def test_masters_train_keep_zeros_and_give_the_model_back(prepared):
    r = prepared
    model, genome = r.session.model, _pruned(r)
    r.bank.apply(genome)
    names = [n for n, _ in model.named_parameters()]
    storage = [p.data_ptr() for p in model.parameters()]
    copies = dict(zip(names, (p.detach().clone() for p in model.parameters())))
    rows = sequences(r.session.pool, 2048, draw=5)
    assert rows.shape == (8, 256)
    assert torch.equal(rows, sequences(r.session.pool, 2048, draw=5))  # the same rows in the same order
    with torch.no_grad():
        first = float(lm_loss(model, rows))
    m = train(model, list(rows.split(2)) * 3, TrainConfig(lr=1e-3), lm_loss)
    with torch.no_grad():
        after = float(lm_loss(model, rows))
    trained = dict(zip(names, m.trained()))
    m.restore()
    assert after < first - 0.05, (first, after)
    down = next(n for n in names if n.endswith("mlp.down_proj.weight"))
    pruned = (copies[down] == 0).all(0)
    assert pruned.any() and (trained[down][:, pruned] == 0).all()  # pruned channels stay pruned
    assert not torch.equal(trained[down][:, ~pruned], copies[down][:, ~pruned])  # the kept ones moved
    assert [p.data_ptr() for p in model.parameters()] == storage  # the bank's own tensors are back
    assert all(torch.equal(p, copies[n]) for n, p in model.named_parameters())


def test_fp32_masters_keep_updates_bf16_would_round_away():
    weight = torch.nn.Linear(64, 64).to(torch.bfloat16)
    model = torch.nn.Sequential(weight)
    start = weight.weight.detach().clone()
    cfg = TrainConfig(lr=1e-5, grad_clip=0.0)
    with Masters(model, cfg, 4) as m:
        for _ in range(4):
            m.step(model(torch.ones(1, 64, dtype=torch.bfloat16)).float().pow(2).sum())
        master = m.masters[0].detach()
    moved = (master - start.float()).abs()
    assert (moved > 3e-5).float().mean() > 0.9  # 4 steps of 1e-5 are there in fp32 ...
    assert torch.equal(weight.weight, start)  # ... and the model has its own tensor back


def test_adapters_train_keep_pruned_rows_and_columns_and_give_the_model_back(prepared):
    r = prepared
    model, genome = r.session.model, _pruned(r)
    r.bank.apply(genome)
    names = [n for n, _ in model.named_parameters()]
    copies = dict(zip(names, (p.detach().clone() for p in model.parameters())))
    rows = sequences(r.session.pool, 1024, draw=5)
    with torch.no_grad():
        first = float(lm_loss(model, rows))
    cfg = TrainConfig(lr=1e-2, lora_rank=4)
    a = train(model, list(rows.split(2)) * 2, cfg, lm_loss)
    assert isinstance(a, Adapters) and all(torch.equal(p, copies[n]) for n, p in model.named_parameters())
    with torch.no_grad():
        adapted, after = model(input_ids=rows[:2]).logits, float(lm_loss(model, rows))
    trained = dict(zip(names, a.trained()))
    a.restore()
    assert after < first - 0.05, (first, after)
    down = next(n for n in names if n.endswith("mlp.down_proj.weight"))
    pruned = (copies[down] == 0).all(0)
    assert pruned.any() and (trained[down][:, pruned] == 0).all()  # pruned channels stay pruned
    assert not torch.equal(trained[down][:, ~pruned], copies[down][:, ~pruned])  # the kept ones moved
    with torch.no_grad():
        assert torch.allclose(model(input_ids=rows[:2]).logits, r.session.model(input_ids=rows[:2]).logits)
        for n, p in model.named_parameters():
            p.copy_(trained[n])  # the merged weights compute what the adapted model did
        assert torch.allclose(model(input_ids=rows[:2]).logits, adapted, atol=1e-4)
        for n, p in model.named_parameters():
            p.copy_(copies[n])
    again = train(model, list(rows.split(2)) * 2, cfg, lm_loss)  # the same start and data: the same weights
    assert all(torch.equal(x, y) for x, y in zip(again.trained(), trained.values()))
    again.restore()


def test_adapters_refuse_scattered_zeros_they_would_fill_in():
    model = torch.nn.Sequential(torch.nn.Linear(64, 64))
    with torch.no_grad():
        model[0].weight[:, :8] = 0  # a pruned block of columns: fine
    Adapters(model, TrainConfig(lora_rank=2), 1).restore()
    with torch.no_grad():
        model[0].weight[::2, 8::2] = 0  # half of the rest, scattered
    with pytest.raises(RecipeError, match="scattered .* --lora-rank 0"):
        Adapters(model, TrainConfig(lora_rank=2), 1)


def test_a_training_stage_scores_after_training_the_same_every_time(prepared):
    r = prepared
    genome = _pruned(r)
    objective = r.objective
    assert isinstance(objective, TrainedObjective)
    plain, trained = Fidelity(1024, 7), Fidelity(1024, 7, 1024)
    r.bank.apply(genome)
    before = [p.detach().clone() for p in r.session.model.parameters()]
    untrained = objective([genome], plain)[0]
    values = objective([genome, genome], trained)
    assert values[0] == values[1]  # the second candidate starts from the same weights
    assert values[0] < untrained - 1e-3, (untrained, values)  # 4 steps at 1e-4 lower the KL to the dense model
    r.bank.apply(genome)  # training left neither the bank's levels nor the other weights changed
    assert all(torch.equal(p, b) for p, b in zip(r.session.model.parameters(), before))
    assert objective([genome], trained)[0] == values[0]


def test_a_training_stage_with_adapters_scores_after_training_the_same_every_time(prepared):
    r, o = prepared, prepared.objective
    genome = _pruned(r)
    # lr 3e-3 moves rank-4 adapters far enough in 1024 tokens to show (1e-2 overshoots)
    adapted = TrainedObjective(o.fast, o.score, o.apply, o.model, o.pool, replace(o.cfg, lr=3e-3, lora_rank=4), o.seed)
    untrained = adapted([genome], Fidelity(1024, 7))[0]
    values = adapted([genome, genome], Fidelity(1024, 7, 1024))
    assert values[0] == values[1] and values[0] < untrained - 1e-3, (untrained, values)


def test_a_killed_training_search_resumes_to_the_same_result(prepared, tmp_path, monkeypatch):
    db = prepared.method.options.database
    whole = run(_config(tmp_path / "whole", db), log=lambda s: None, steps=("search",))
    calls = {"n": 0}
    original = TrainedObjective.__call__

    def dying(self, genomes, fidelity):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt  # killed in the second generation, after three stages were journaled
        return original(self, genomes, fidelity)

    monkeypatch.setattr(TrainedObjective, "__call__", dying)
    with pytest.raises(KeyboardInterrupt):
        run(_config(tmp_path / "killed", db), log=lambda s: None, steps=("search",))
    monkeypatch.setattr(TrainedObjective, "__call__", original)
    resumed = run(_config(tmp_path / "killed", db), log=lambda s: None, steps=("search",))
    journal = (tmp_path / "killed" / "journal.jsonl").read_text()
    assert '"train_tokens": 512' in journal and '"train_tokens": 1024' in journal
    a, b = whole.plans["EvoPress"], resumed.plans["EvoPress"]
    assert a["genome"] == b["genome"] and a["fitness"] == b["fitness"] and a["kl"] == b["kl"]


def test_training_needs_a_pool_and_the_lm_loss(tmp_path):
    cfg = _config(tmp_path / "r", tmp_path / "db")
    with pytest.raises(RecipeError, match="--training-tokens"):
        run(replace(cfg, data=dataclasses.replace(cfg.data, training_tokens=0)), log=lambda s: None)
    with pytest.raises(RecipeError, match="training tokens"):
        from_dict({"search": {"stages": [[2, 512, 512, 3]]}})
    with pytest.raises(DataError, match="set --training-tokens to at least 8,192"):
        run(replace(cfg, search=dataclasses.replace(cfg.search, stages=((1, 1024, 8192),))), log=lambda s: None)
