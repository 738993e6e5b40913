"""KL fitness where each candidate runs only from its first changed block (any per-layer search).

Offspring differ from their parent in a few units, so every block before a candidate's first
changed unit computes exactly what the parent computes. For one minibatch the *reference*
genome (per unit, the most common level of the call: the parent, for offspring of one parent)
runs once through the decoder with every block's input and keyword arguments kept; each other
candidate is applied (`apply`, e.g. rebinding sparse weights) and run from its first changed
block only. Values equal the straightforward objective's (tests check); EvoPress §2.8
(arXiv 2410.14649) motivates the reuse.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence

import torch

from evopress.eval.batched import _run_reference, kl_sum_of_states
from evopress.eval.batches import check_tokens, plan_segments, segment_batches
from evopress.eval.forward import _decoder_and_head, default_chunk_tokens, model_device
from evopress.eval.minibatch import sample_minibatch
from evopress.eval.teacher import TeacherTargets
from evopress.models.capture import _hidden
from evopress.search.fidelity import Fidelity

Genome = tuple[int, ...]


def consensus(genomes: Sequence[Genome]) -> Genome:
    """Per unit the most common level (ties: the lowest level), a stand-in for the parent."""
    out = []
    for levels in zip(*genomes):
        counts = Counter(levels)
        out.append(min(counts, key=lambda level: (-counts[level], level)))
    return tuple(out)


class PrefixKL:
    """Same contract as `KLObjective`; `unit_blocks[u]` is the decoder block unit `u` lives in."""

    fitness = "kl"

    def __init__(self, adapter, apply: Callable[[Genome], object], unit_blocks: Sequence[int],
                 tokens: torch.Tensor, targets: TeacherTargets, seed: int = 0, batch_size: int = 8,
                 chunk_tokens: int | None = None):
        check_tokens(tokens)
        targets.check(tokens)
        self.adapter, self.apply, self.unit_blocks, self.targets = adapter, apply, list(unit_blocks), targets
        self.model = adapter.model
        self.tokens = tokens.to(model_device(self.model))
        self.seed, self.batch_size = seed, batch_size
        self.chunk = chunk_tokens or default_chunk_tokens(self.model)
        self.tokens_evaluated = self.candidates_evaluated = 0
        _, self.head = _decoder_and_head(self.model)

    def describe(self) -> dict:
        n_seq, seq_len = self.tokens.shape
        return {"fitness": "kl", "seed": self.seed, "calibration_rows": n_seq, "calibration_seq_len": seq_len,
                "batch_size": self.batch_size, **self.targets.describe()}

    def first_block(self, genome: Genome, reference: Genome) -> int | None:
        changed = [self.unit_blocks[u] for u, (a, b) in enumerate(zip(genome, reference)) if a != b]
        return min(changed) if changed else None

    def __call__(self, genomes: Sequence[Genome], fidelity: Fidelity,
                 only: Sequence[int] | None = None) -> list[float]:
        n_seq, seq_len = self.tokens.shape
        batch = sample_minibatch(n_seq, seq_len - 1, fidelity.tokens, self.seed, fidelity.draw)
        reference = consensus(genomes)
        mine = [tuple(genomes[i]) for i in (range(len(genomes)) if only is None else only)]
        starts = [self.first_block(g, reference) for g in mine]
        sums = torch.zeros(len(mine), device=model_device(self.model))
        segments = plan_segments(self.tokens, batch.rows, batch.positions)
        with torch.inference_mode():
            for rows, n in segment_batches(segments, self.batch_size):
                sums += self._rows(rows, n, reference, mine, starts)
        self.tokens_evaluated += batch.tokens * len(mine)
        self.candidates_evaluated += len(mine)
        return [float(v) for v in (sums / batch.tokens).tolist()]

    def _rows(self, rows: list[int], n: int, reference: Genome, mine, starts) -> torch.Tensor:
        self.apply(reference)
        inputs, kwargs, final = _run_reference(self.adapter, self.tokens[rows, :n], keep_all=True)
        row_index = torch.tensor(rows, device=self.targets.logprobs.device)
        ref = self._kl(final, row_index, n)
        out = []
        blocks = self.adapter.blocks()
        norm = self.adapter.final_norm()
        for genome, start in zip(mine, starts):
            if start is None:
                out.append(ref)
                continue
            self.apply(genome)
            hidden = inputs[start]
            for b in range(start, len(blocks)):
                hidden = _hidden(blocks[b](hidden, **kwargs[b]))
            out.append(self._kl(norm(hidden), row_index, n))
        return torch.stack(out) if out else torch.zeros(0, device=final.device)

    def _kl(self, final: torch.Tensor, row_index: torch.Tensor, n: int) -> torch.Tensor:
        return kl_sum_of_states(self.head, self.targets, final, row_index, n, self.chunk)
