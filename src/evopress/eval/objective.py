"""Where a genome becomes a number: configure the model, score it on a deterministic minibatch.

`Objective(genomes, fidelity) -> fitness values` (lower is better). The minibatch is chosen
from `(seed, fidelity.draw)` and `fidelity.tokens` only (`evopress.eval.minibatch`), and every
genome of a call is scored on it alone, in the same batches, so a candidate's value depends on
nothing but (genome, fidelity): it can be cached and re-asked after a resume. The caller's
`apply(genome)` must set the model's whole state for that genome, not change it relative to
the previous candidate.

Fitness is the KL of the candidate to the dense model (EvoPress's choice, arXiv 2410.14649) or
calibration perplexity, which the paper shows to be the worse fitness.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from evopress.eval.batches import check_tokens
from evopress.eval.forward import model_device
from evopress.eval.metrics import mean_kl, mean_nll
from evopress.eval.minibatch import Minibatch, sample_minibatch
from evopress.eval.teacher import TeacherTargets
from evopress.search.fidelity import Fidelity

Genome = tuple[int, ...]


class _MinibatchObjective:
    """Shared sampling, looping and accounting; subclasses define `fitness` and `_score`."""

    fitness = ""

    def __init__(self, model, apply: Callable[[Genome], object], tokens: torch.Tensor,
                 seed: int = 0, batch_size: int = 8, chunk_tokens: int | None = None):
        check_tokens(tokens)
        # on the model's device once, so candidates never copy token ids from the host
        self.model, self.apply = model, apply
        self.tokens = tokens.to(model_device(model))
        self.seed, self.batch_size, self.chunk_tokens = seed, batch_size, chunk_tokens
        self.tokens_evaluated = 0  # scored (= fed) tokens over all candidates, for tokens/s
        self.candidates_evaluated = 0

    def minibatch(self, fidelity: Fidelity) -> Minibatch:
        """The rows and positions every candidate asked at `fidelity` is scored on."""
        n_seq, seq_len = self.tokens.shape
        return sample_minibatch(n_seq, seq_len - 1, fidelity.tokens, self.seed, fidelity.draw)

    def __call__(self, genomes: Sequence[Genome], fidelity: Fidelity,
                 only: Sequence[int] | None = None) -> list[float]:
        """Values of `genomes` (or of `genomes[i] for i in only`, for a share of a split call)."""
        batch = self.minibatch(fidelity)  # fails before touching the model if data is short
        values = []
        for genome in genomes if only is None else [genomes[i] for i in only]:
            self.apply(genome)
            with torch.inference_mode():
                values.append(self._score(batch))
            self.tokens_evaluated += batch.tokens
            self.candidates_evaluated += 1
        # one host sync for the whole call: queued candidates keep the device busy
        return [float(v) for v in values]

    def describe(self) -> dict:
        """Settings to record with every fitness value."""
        n_seq, seq_len = self.tokens.shape
        return {"fitness": self.fitness, "seed": self.seed, "calibration_rows": n_seq,
                "calibration_seq_len": seq_len, "batch_size": self.batch_size}

    def _score(self, batch: Minibatch) -> torch.Tensor:
        raise NotImplementedError

    def _selection(self, batch: Minibatch) -> dict:
        return {"rows": batch.rows, "positions": batch.positions,
                "chunk_tokens": self.chunk_tokens}


class KLObjective(_MinibatchObjective):
    """Fitness = mean per-token KL(P_dense || Q_candidate) in nats on the minibatch.

    `targets` are the dense model's `teacher_targets` on `tokens` (full or top-K+tail; see
    `evopress.eval.metrics.kl_to_teacher` for the exact definition).
    """

    fitness = "kl"

    def __init__(self, model, apply: Callable[[Genome], object], tokens: torch.Tensor,
                 targets: TeacherTargets, seed: int = 0, batch_size: int = 8,
                 chunk_tokens: int | None = None):
        super().__init__(model, apply, tokens, seed, batch_size, chunk_tokens)
        targets.check(tokens)  # once here, so the per-candidate loop stays hash-free
        self.targets = targets

    def describe(self) -> dict:
        return {**super().describe(), **self.targets.describe()}

    def _score(self, batch: Minibatch) -> torch.Tensor:
        return mean_kl(self.model, self.tokens, self.targets, self.batch_size,
                       **self._selection(batch))


class PerplexityObjective(_MinibatchObjective):
    """Fitness = perplexity on the minibatch: exp(mean next-token NLL in nats) of its tokens."""

    fitness = "perplexity"

    def _score(self, batch: Minibatch) -> torch.Tensor:
        return mean_nll(self.model, self.tokens, self.batch_size, **self._selection(batch)).exp()
