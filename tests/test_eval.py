"""Metrics, teacher targets, the search objective and ShortGPT on a tiny random Llama (CPU)."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.models.llama.modeling_llama import LlamaDecoderLayer

from evopress.baselines.shortgpt import block_influence, shortgpt_drop
from evopress.errors import DataError
from evopress.eval.metrics import (
    kl_to_teacher,
    perplexity,
    perplexity_protocol,
    teacher_targets,
)
from evopress.eval.minibatch import sample_minibatch
from evopress.eval.objective import KLObjective, PerplexityObjective
from evopress.search.fidelity import Fidelity

VOCAB, SEQ = 256, 17


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    # a large init spread makes the next-token distributions peaked, like a trained model's,
    # so top-K truncation and perturbations have a visible effect
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=128,
                         num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=64, initializer_range=0.2)
    return LlamaForCausalLM(config).eval()


@pytest.fixture(scope="module")
def tokens():
    return torch.randint(0, VOCAB, (6, SEQ), generator=torch.Generator().manual_seed(1))


def perturbed(model, scale=0.05, seed=2):
    other = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * scale * p.std())
    return other


def logits_of(model, tokens):
    with torch.no_grad():
        return model(input_ids=tokens).logits[:, :-1].float()


def direct_kl(teacher_logits, student_logits):
    """KL(P||Q) per position, straight from F.kl_div on all logits."""
    p = teacher_logits.reshape(-1, VOCAB).log_softmax(-1)
    q = student_logits.reshape(-1, VOCAB).log_softmax(-1)
    return F.kl_div(q, p, log_target=True, reduction="batchmean").item()


def test_perplexity_is_exp_of_cross_entropy(model, tokens):
    logits = logits_of(model, tokens)
    nll = F.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten())
    assert perplexity(model, tokens, batch_size=4, chunk_tokens=5) == pytest.approx(
        math.exp(nll.item()), rel=1e-5)
    plain = copy.deepcopy(model)
    plain.get_output_embeddings = lambda: None  # forces the plain `model(...).logits` path
    assert perplexity(plain, tokens, chunk_tokens=5) == pytest.approx(math.exp(nll.item()),
                                                                      rel=1e-5)
    proto = perplexity_protocol(tokens, source="random")
    assert (proto["n_seq"], proto["seq_len"], proto["predicted_tokens"]) == (6, SEQ, 6 * 16)


def test_perplexity_of_row_prefix(model, tokens):
    logits = logits_of(model, tokens[2:3])[:, :5]
    nll = F.cross_entropy(logits.flatten(0, 1), tokens[2, 1:6])
    got = perplexity(model, tokens, rows=[2], positions=[5])
    assert got == pytest.approx(math.exp(nll.item()), rel=1e-5)


def test_kl_to_own_targets_is_zero_and_positive_when_perturbed(model, tokens):
    targets = teacher_targets(model, tokens, batch_size=4)  # fp16 storage
    assert abs(kl_to_teacher(model, tokens, targets)) < 1e-4
    assert kl_to_teacher(perturbed(model), tokens, targets) > 1e-3


def test_full_kl_matches_kl_div(model, tokens):
    student = perturbed(model)
    targets = teacher_targets(model, tokens, dtype=torch.float32)
    got = kl_to_teacher(student, tokens, targets, batch_size=4, chunk_tokens=7)
    want = direct_kl(logits_of(model, tokens), logits_of(student, tokens))
    assert got == pytest.approx(want, rel=1e-4)
    prefix = kl_to_teacher(student, tokens, targets, rows=[4, 1], positions=[16, 3])

    def segments(m):  # row 4 whole, then the first 3 positions of row 1
        logits = logits_of(m, tokens)
        return torch.cat([logits[4], logits[1, :3]])
    want = direct_kl(segments(model), segments(student))
    assert prefix == pytest.approx(want, rel=1e-4)


def test_topk_kl_keeps_the_tail(model, tokens):
    student = perturbed(model, scale=0.2)
    full = kl_to_teacher(student, tokens, teacher_targets(model, tokens, dtype=torch.float32))
    every = teacher_targets(model, tokens, topk=VOCAB, dtype=torch.float32)
    assert kl_to_teacher(student, tokens, every) == pytest.approx(full, rel=1e-4)
    small = kl_to_teacher(student, tokens, teacher_targets(model, tokens, topk=4))
    assert 0 < small <= full


def test_minibatch_exact_deterministic_and_per_draw():
    a = sample_minibatch(n_rows=10, row_tokens=16, tokens=37, seed=0, draw=3)
    assert a.tokens == 37 and a.positions == (16, 16, 5) and len(set(a.rows)) == 3
    assert a == sample_minibatch(10, 16, 37, seed=0, draw=3)
    assert a != sample_minibatch(10, 16, 37, seed=0, draw=4)
    # same draw, more tokens: the smaller minibatch's rows come first (nested stages)
    assert sample_minibatch(10, 16, 100, seed=0, draw=3).rows[:3] == a.rows
    with pytest.raises(DataError):
        sample_minibatch(10, 16, 161, seed=0, draw=0)


def scaled_apply(model):
    """`apply(genome)`: scale every weight matrix by 1 + 0.1 * genome[0] from the originals."""
    originals = {n: p.detach().clone() for n, p in model.named_parameters() if p.dim() == 2}

    def apply(genome):
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name in originals:
                    p.copy_(originals[name] * (1 + 0.1 * genome[0]))
    return apply


def test_objective_independent_of_batch_composition(model, tokens):
    student = copy.deepcopy(model)
    targets = teacher_targets(model, tokens)
    objective = KLObjective(student, scaled_apply(student), tokens, targets, seed=5, batch_size=2)
    fid = Fidelity(tokens=40, draw=1)
    together = objective([(0,), (2,), (1,)], fid)
    alone = objective([(1,)], fid)
    assert together[2] == alone[0] and together[0] < 1e-4 < together[1]
    batch = objective.minibatch(fid)
    objective.apply((2,))
    direct = kl_to_teacher(student, tokens, targets, rows=batch.rows, positions=batch.positions)
    assert together[1] == pytest.approx(direct, rel=1e-6)
    assert objective.tokens_evaluated == 4 * 40
    with pytest.raises(DataError):
        objective([(0,)], Fidelity(tokens=6 * 16 + 1, draw=0))


def test_perplexity_objective(model, tokens):
    objective = PerplexityObjective(model, lambda genome: None, tokens, seed=0)
    fid = Fidelity(tokens=16, draw=0)
    (value,) = objective([(0,)], fid)
    row = objective.minibatch(fid).rows[0]
    assert value == pytest.approx(perplexity(model, tokens, rows=[row]), rel=1e-5)


def blocks_of(model):
    return [m for m in model.modules() if isinstance(m, LlamaDecoderLayer)]


def test_block_influence_matches_hidden_states(model, tokens):
    blocks = blocks_of(model)
    bi = block_influence(model, blocks, tokens, batch_size=4)
    with torch.no_grad():
        hidden = model(input_ids=tokens, output_hidden_states=True).hidden_states
    for layer in range(len(blocks) - 1):  # the last entry of hidden_states is final-normed
        cos = F.cosine_similarity(hidden[layer], hidden[layer + 1], dim=-1)
        assert bi[layer] == pytest.approx(1 - cos.mean().item(), abs=1e-5)
    drop = shortgpt_drop(model, blocks, tokens, k=2)
    assert drop == sorted(sorted(range(len(bi)), key=lambda i: (bi[i], i))[:2])


def test_empty_tokens_are_a_data_error(model):
    empty = torch.empty(0, SEQ, dtype=torch.long)
    with pytest.raises(DataError):
        perplexity(model, empty)
    with pytest.raises(DataError):
        teacher_targets(model, empty)
    with pytest.raises(DataError):
        block_influence(model, blocks_of(model), empty)
    with pytest.raises(DataError):
        PerplexityObjective(model, lambda genome: None, empty)
