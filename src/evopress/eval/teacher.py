"""The dense model's next-token distributions, computed once and stored compactly.

EvoPress scores a candidate by KL(P_dense || Q_candidate) per token (arXiv 2410.14649), so the
dense distribution P at every calibration position is needed for every candidate. Two storage modes:

* full: log P over the whole vocabulary, `[n_seq, seq_len-1, V]` in fp16 by default. Log-probs,
  not logits, so the numbers sit in a narrow range (about [-100, 0]) where fp16's 11-bit
  mantissa is 8x finer than bf16's and its range (+-65504) is ample. They are kept on the
  model's device by default: every candidate reads all targets of its minibatch, and reading
  them over PCIe from host memory (2*V bytes per token) would cost more than the forward pass.
  When they do not fit (e.g. a 128k vocabulary on many tokens), use top-K or `device="cpu"`.
* top-K: the K largest log P, their token ids (int32), and log of the remaining tail mass
  `log(1 - sum_k P_k)`, `[n_seq, seq_len-1, K]` (+ `[n_seq, seq_len-1]`). Unlike the reference
  code, which renormalises the top-K and drops the tail, the tail is kept as a (K+1)-th outcome.

Readers re-normalise in fp32 (log-softmax over V, or over the K+1 outcomes), so rounding never
makes P an improper distribution and KL of a model to its own targets stays >= 0 and ~0.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch

from evopress.errors import DataError, RecipeError
from evopress.eval.batches import check_tokens, device_index, plan_segments, segment_batches
from evopress.eval.forward import logit_chunks, model_device
from evopress.progress import bar


def token_fingerprint(tokens: torch.Tensor) -> str:
    """SHA-256 of the token ids and shape: identifies the data targets were computed on."""
    data = tokens.detach().to("cpu", torch.int64).contiguous()
    digest = hashlib.sha256(repr(tuple(data.shape)).encode())
    digest.update(data.numpy().tobytes())
    return digest.hexdigest()


@dataclass(frozen=True, eq=False)
class TeacherTargets:
    """Dense next-token log-probs at positions `0 .. seq_len-2` of every token row.

    `logprobs[i, j]` is log P(. | row i, tokens 0..j): over the whole vocabulary when `indices`
    is None, else at the token ids `indices[i, j]`, with `log_tail[i, j]` the log of the mass
    of all other tokens. `fingerprint` is `token_fingerprint` of the rows they came from.
    """

    logprobs: torch.Tensor
    indices: torch.Tensor | None
    log_tail: torch.Tensor | None
    fingerprint: str

    @property
    def topk(self) -> int | None:
        """K for top-K targets, None for full-vocabulary targets."""
        return None if self.indices is None else self.indices.shape[-1]

    @property
    def n_seq(self) -> int:
        return self.logprobs.shape[0]

    @property
    def positions(self) -> int:
        """Scored positions per row (seq_len - 1)."""
        return self.logprobs.shape[1]

    @property
    def nbytes(self) -> int:
        parts = (self.logprobs, self.indices, self.log_tail)
        return sum(t.numel() * t.element_size() for t in parts if t is not None)

    def describe(self) -> dict:
        """What to record next to every KL number."""
        return {"targets": "full" if self.topk is None else f"top-{self.topk}+tail",
                "dtype": str(self.logprobs.dtype).removeprefix("torch."),
                "device": str(self.logprobs.device), "bytes": self.nbytes,
                "n_seq": self.n_seq, "positions_per_row": self.positions}

    def check(self, tokens: torch.Tensor) -> None:
        """Raise unless these targets were computed from exactly `tokens`."""
        check_tokens(tokens)
        if token_fingerprint(tokens) != self.fingerprint:
            raise DataError("teacher targets were computed on different tokens; recompute "
                            "them with teacher_targets(dense_model, tokens) for these tokens")

    def row_index(self, rows: list[int]) -> torch.Tensor:
        """`rows` as an index tensor on the targets' device, copied without waiting for the device."""
        return device_index(rows, self.logprobs.device)

    def gather(self, rows: torch.Tensor, n: int, start: int, stop: int, device: torch.device):
        """Targets at flat positions `start..stop-1` of the segments `(row, n) for row in rows`.

        `rows` is an index tensor on the targets' device.
        Flat position `f` is row `rows[f // n]`, position `f % n` (the order `logit_chunks`
        yields). Only this slice is copied, so a batch's targets are never duplicated whole.
        Returns `(logprobs, indices, log_tail)` on `device`, the last two None for full targets.
        """
        flat = torch.arange(start, stop, device=self.logprobs.device)
        r, p = rows[flat // n], flat % n

        def take(t):
            return None if t is None else t[r, p].to(device, non_blocking=True)
        return take(self.logprobs), take(self.indices), take(self.log_tail)


@torch.inference_mode()
def teacher_targets(
    model: torch.nn.Module,
    tokens: torch.Tensor,
    topk: int | None = None,
    batch_size: int = 8,
    *,
    dtype: torch.dtype = torch.float16,
    device: torch.device | str | None = None,
    chunk_tokens: int | None = None,
    progress: str = "",
) -> TeacherTargets:
    """Run the dense `model` over every row once and store its next-token log-probs.

    `dtype` is the storage type of the log-probs (fp16 default, see the module docstring; fp32
    for exact comparisons); `device` defaults to the model's device; `progress` names a progress
    bar (none when empty).
    """
    segments = plan_segments(tokens)
    if topk is not None and topk < 1:
        raise RecipeError(f"topk must be a positive number of tokens or None, got {topk}")
    if not dtype.is_floating_point:
        raise RecipeError(f"teacher log-probs need a floating dtype (float16 default), got {dtype}")
    store = torch.device(device) if device is not None else model_device(model)
    n_seq, seq_len = tokens.shape
    out: dict[str, torch.Tensor] = {}
    batches = list(segment_batches(segments, batch_size))
    for rows, n in bar(batches, progress, len(batches), "batch"):
        ids = tokens[rows, :n].to(model_device(model), torch.long)
        for start, logits in logit_chunks(model, ids, chunk_tokens):
            parts = _compress(logits.log_softmax(-1), topk, dtype)
            for name, value in parts.items():
                if name not in out:
                    out[name] = torch.empty((n_seq, seq_len - 1, *value.shape[1:]),
                                            dtype=value.dtype, device=store)
                # rows of one batch are consecutive, so they form one contiguous flat block
                flat = out[name][rows[0]:rows[-1] + 1].flatten(0, 1)
                flat[start:start + value.shape[0]] = value.to(store)
    return TeacherTargets(out["logprobs"], out.get("indices"), out.get("log_tail"),
                          token_fingerprint(tokens))


def _compress(logprobs: torch.Tensor, topk: int | None, dtype: torch.dtype) -> dict:
    """Full or top-K(+tail) storage form of fp32 log-probs `[c, V]`."""
    lowest = torch.finfo(dtype).min
    if topk is None:
        # clamp keeps -inf out of storage, so p*log p never becomes 0*inf = nan
        return {"logprobs": logprobs.clamp_min(lowest).to(dtype)}
    k = min(topk, logprobs.shape[-1])
    values, indices = logprobs.topk(k, dim=-1)
    # log of the tail mass from the tail entries themselves: exact even when it is tiny,
    # unlike log(1 - sum p_k); -inf when K covers the whole vocabulary
    log_tail = logprobs.scatter(-1, indices, float("-inf")).logsumexp(-1)
    return {"logprobs": values.clamp_min(lowest).to(dtype),
            "indices": indices.to(torch.int32), "log_tail": log_tail.to(dtype)}
