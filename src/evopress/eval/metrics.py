"""Perplexity and KL-to-teacher of a causal LM on rows of tokens (pure torch, chunked).

Every function scores *segments*: the first `n` positions of selected rows, position `j`
predicting token `j+1` of its row (see `evopress.eval.batches`). By default all rows and all
`seq_len - 1` predicting positions are scored. `rows=`/`positions=` select a subset, e.g. a
search minibatch that ends mid-row. Results are token-level means: every scored position
weighs the same, whatever row it is in.

`mean_nll`/`mean_kl` return a 0-d tensor on the model's device without synchronising with
the host, so a caller can queue many candidates. `perplexity`/`kl_to_teacher` return floats.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from evopress.errors import DataError
from evopress.eval.batches import plan_segments, segment_batches
from evopress.eval.forward import logit_chunks, model_device
from evopress.eval.teacher import TeacherTargets, teacher_targets  # noqa: F401  (public here)
from evopress.progress import bar

PPL_PROTOCOL = {
    "metric": "perplexity = exp(mean next-token negative log-likelihood, nats)",
    "convention": "GPTQ (Frantar et al., arXiv 2210.17323), as used by EvoPress (arXiv 2410.14649)",
    "windows": "non-overlapping: each token row is one window, scored from its first token with "
               "no context carried over from the previous row",
    "predicted_positions": "tokens 1..seq_len-1 of every row; the first token is context only",
    "averaging": "token-level mean over all predicted tokens of all rows",
    "bos": "none inserted; rows are scored exactly as given",
    "units": "tokens of the model's own tokenizer (tokenization is done by the caller)",
}


def perplexity_protocol(tokens: torch.Tensor, source: str) -> dict:
    """`PPL_PROTOCOL` plus this evaluation's data: record it next to every perplexity."""
    n_seq, seq_len = tokens.shape
    return {**PPL_PROTOCOL, "source": source, "n_seq": int(n_seq), "seq_len": int(seq_len),
            "predicted_tokens": int(n_seq * (seq_len - 1))}


@torch.inference_mode()
def mean_nll(
    model: torch.nn.Module,
    tokens: torch.Tensor,
    batch_size: int = 8,
    *,
    rows: Sequence[int] | None = None,
    positions: int | Sequence[int] | None = None,
    chunk_tokens: int | None = None,
    progress: str = "",
) -> torch.Tensor:
    """Mean over scored positions of -log Q(next token), in nats (0-d tensor, no host sync).

    `progress`: the name of a progress bar over the row batches (none when empty)."""
    segments = plan_segments(tokens, rows, positions)
    device = model_device(model)
    sums = []
    batches = list(segment_batches(segments, batch_size))
    for batch_rows, n in bar(batches, progress, len(batches), "batch"):
        ids = tokens[batch_rows, :n + 1].to(device, torch.long)
        labels = ids[:, 1:].flatten()
        for start, logits in logit_chunks(model, ids[:, :n], chunk_tokens):
            target = labels[start:start + logits.shape[0]].to(logits.device)
            sums.append(F.cross_entropy(logits, target, reduction="sum"))
    return torch.stack(sums).sum() / sum(n for _, n in segments)


def perplexity(
    model: torch.nn.Module,
    tokens: torch.Tensor,
    batch_size: int = 8,
    *,
    rows: Sequence[int] | None = None,
    positions: int | Sequence[int] | None = None,
    chunk_tokens: int | None = None,
    progress: str = "",
) -> float:
    """Perplexity, GPTQ convention (`PPL_PROTOCOL`): exp of `mean_nll` over the rows.

    PPL = exp( (1/N) * sum_rows sum_{j<n} -log Q(x_{j+1} | x_0..x_j) ), N = number of scored
    positions; with whole rows of equal length this equals GPTQ's mean of per-window mean NLL
    (the perplexity EvoPress reports, arXiv 2410.14649). `rows`/`positions` select segments
    (see the module docstring); `chunk_tokens` is positions per fp32 logit slice.
    """
    nll = mean_nll(model, tokens, batch_size, rows=rows, positions=positions,
                   chunk_tokens=chunk_tokens, progress=progress)
    return math.exp(float(nll))


@torch.inference_mode()
def mean_kl(
    model: torch.nn.Module,
    tokens: torch.Tensor,
    targets: TeacherTargets,
    batch_size: int = 8,
    *,
    rows: Sequence[int] | None = None,
    positions: int | Sequence[int] | None = None,
    chunk_tokens: int | None = None,
) -> torch.Tensor:
    """`kl_to_teacher` as a 0-d tensor on the model's device (no host sync)."""
    segments = plan_segments(tokens, rows, positions)
    _check_targets(tokens, targets)
    device = model_device(model)
    sums = []
    for batch_rows, n in segment_batches(segments, batch_size):
        ids = tokens[batch_rows, :n].to(device, torch.long)
        row_index = targets.row_index(batch_rows)
        for start, logits in logit_chunks(model, ids, chunk_tokens):
            stop = start + logits.shape[0]
            teacher = targets.gather(row_index, n, start, stop, logits.device)
            sums.append(_kl_sum(logits, *teacher))
    return torch.stack(sums).sum() / sum(n for _, n in segments)


def kl_to_teacher(
    model: torch.nn.Module,
    tokens: torch.Tensor,
    targets: TeacherTargets,
    batch_size: int = 8,
    *,
    rows: Sequence[int] | None = None,
    positions: int | Sequence[int] | None = None,
    chunk_tokens: int | None = None,
) -> float:
    """Mean per-token KL(P_dense || Q_model) in nats, EvoPress's fitness (arXiv 2410.14649).

    Full targets: KL = (1/N) sum_positions sum_{v in vocab} P(v) (log P(v) - log Q(v)).
    Top-K targets (teacher's top-K tokens S at each position, P_tail = 1 - sum_{v in S} P(v),
    Q_tail = 1 - sum_{v in S} Q(v)): per position
        sum_{v in S} P(v) log(P(v)/Q(v)) + P_tail log(P_tail/Q_tail),
    the exact KL between P and Q coarsened to K+1 outcomes (S's tokens and "anything else").
    By the data-processing inequality it is a lower bound of the full KL, equal to it when
    K = V. (The reference code instead renormalises both over S and drops the tail.)
    `targets` must come from `teacher_targets(dense, tokens)`; `targets.check(tokens)` verifies
    it. `rows`/`positions`/`chunk_tokens` as for `perplexity`.
    """
    kl = mean_kl(model, tokens, targets, batch_size, rows=rows, positions=positions,
                 chunk_tokens=chunk_tokens)
    return float(kl)


def _check_targets(tokens: torch.Tensor, targets: TeacherTargets) -> None:
    n_seq, seq_len = tokens.shape
    if (targets.n_seq, targets.positions) != (n_seq, seq_len - 1):
        raise DataError(f"teacher targets cover {targets.n_seq} rows x {targets.positions} "
                        f"positions but tokens are {n_seq} x {seq_len}; compute the targets "
                        "with teacher_targets(dense_model, tokens) on these same tokens")


def _kl_sum(logits, logp_stored, indices, log_tail) -> torch.Tensor:
    """Sum over the chunk's positions of the per-position KL (see `kl_to_teacher`).

    `logits` is `[..., c, V]` (any float dtype; fp32 math): leading axes are candidates that
    share the teacher's `[c, ...]` targets, and get a sum each (a 0-d tensor for `[c, V]`)."""
    logits = logits.float()  # in the compiled KL the upcast fuses with what follows
    logq = logits.sub_(logits.logsumexp(-1, keepdim=True))  # in place: the chunk is ours
    if indices is None:
        logp = logp_stored.float().log_softmax(-1)  # renormalise the rounded teacher
        return (logp.exp() * (logp - logq)).sum((-2, -1))
    index = indices.long().expand(*logq.shape[:-1], indices.shape[-1])
    logq_tail = logq.scatter(-1, index, float("-inf")).logsumexp(-1, keepdim=True)
    logq = torch.cat([logq.gather(-1, index), logq_tail], -1)
    logp = torch.cat([logp_stored, log_tail[:, None]], -1).float().log_softmax(-1)
    # an empty tail (K = V) has P_tail = 0 and contributes 0, not 0 * (-inf) = nan
    terms = torch.where(logp > float("-inf"), logp.exp() * (logp - logq), 0.0)
    return terms.sum((-2, -1))
