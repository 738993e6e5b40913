"""KL fitness of per-layer variants (sparsity levels, ...), candidates stacked, each from its first change.

Offspring differ from their parent in a few units, so every block before a candidate's first
changed unit computes exactly what the parent computes. For one minibatch:

1. the *reference* genome (per unit, the most common level of the call: the parent, for
   offspring of one parent) runs once through the decoder with every block's input and
   keyword arguments kept;
2. candidates join at their first changed block from the kept input, and from there all joined
   candidates run each block once, stacked along the row axis (`ModelAdapter.stacked_block`);
   in a linear layer where some candidates use another level than the reference, just their
   rows are recomputed with their weights (row slices: no gathers, no host synchronisation);
3. the LM head and the KL to the teacher are computed in position slices, per candidate.

Values equal the straightforward objective's (tests check). EvoPress §2.8 (arXiv 2410.14649)
motivates the reuse; the stacking is this implementation's.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from evopress.eval.batched import ReferenceKL, _run_reference
from evopress.eval.teacher import TeacherTargets

Genome = tuple[int, ...]


def consensus(genomes: Sequence[Genome]) -> Genome:
    """Per unit the most common level (ties: the lowest level), a stand-in for the parent."""
    out = []
    for levels in zip(*genomes):
        counts = Counter(levels)
        out.append(min(counts, key=lambda level: (-counts[level], level)))
    return tuple(out)


class PrefixKL(ReferenceKL):
    """Same contract as `KLObjective`; `bank` is a variant bank (see `evopress.database.bank`)."""

    def __init__(self, adapter, bank, tokens: torch.Tensor, targets: TeacherTargets, seed: int = 0,
                 batch_size: int = 8, max_tokens: int = 1 << 16, chunk_tokens: int | None = None,
                 compile: str | None = None):
        super().__init__(adapter, tokens, targets, seed, batch_size, max_tokens, chunk_tokens, compile)
        self.bank = bank
        self.units_of = [[u for u, b in enumerate(bank.blocks) if b == block] for block in range(adapter.num_blocks)]

    def first_block(self, genome: Genome, reference: Genome) -> int | None:
        changed = [self.bank.blocks[u] for u, (a, b) in enumerate(zip(genome, reference)) if a != b]
        return min(changed) if changed else None

    def _prepare(self, genomes, only):
        """The consensus, and each candidate with its first changed block (once per call, not per row batch)."""
        reference = consensus(genomes)
        mine = [tuple(genomes[i]) for i in (range(len(genomes)) if only is None else only)]
        return reference, [(g, self.first_block(g, reference)) for g in mine]

    def _rows(self, rows: list[int], n: int, reference: Genome, items) -> torch.Tensor:
        """KL sums on these rows, one per candidate."""
        self.bank.apply(reference)
        inputs, kwargs, final = _run_reference(self.adapter, self.tokens[rows, :n], keep_all=True)
        row_index = self.targets.row_index(rows)
        out = torch.empty(len(items), device=final.device)
        starts = [start for _, start in items]
        if None in starts:
            ref = self._kl(final, row_index, n)
            for c in (c for c, s in enumerate(starts) if s is None):
                out[c] = ref
        todo = sorted((c for c, s in enumerate(starts) if s is not None), key=lambda c: starts[c])
        group = max(1, self.max_tokens // (len(rows) * n))
        for i in range(0, len(todo), group):
            part = todo[i:i + group]
            finals = self._candidates([items[c][0] for c in part], [starts[c] for c in part], reference,
                                      inputs, kwargs, len(rows))
            for c, states in zip(part, finals):
                out[c] = self._kl(states, row_index, n)
        return out

    def _candidates(self, genomes, starts, reference, inputs, kwargs, rows: int):
        """Final normed states of candidates sorted by first changed block, run stacked from there."""
        hidden, joined = None, 0
        for b in range(starts[0], self.adapter.num_blocks):
            new = sum(s == b for s in starts)
            if new:
                fresh = inputs[b].repeat(new, 1, 1)
                hidden = fresh if hidden is None else torch.cat([hidden, fresh])
                joined += new
            fix = _row_fixer(self._fixes(b, genomes[:joined], reference, rows))
            hidden = self.adapter.stacked_block(b, hidden, kwargs[b], joined, fix)
        return self.adapter.final_norm()(hidden).split(rows)

    def _fixes(self, block: int, genomes, reference, rows: int) -> dict:
        """Per linear module of the block, (row slice, weight) of each candidate that leaves the reference."""
        fixes = {}
        for u in self.units_of[block]:
            name = self.bank.names[u]
            mine = [(slice(j * rows, (j + 1) * rows), self.bank.weight(name, g[u]))
                    for j, g in enumerate(genomes) if g[u] != reference[u]]
            if mine:
                fixes[self.bank.modules[name]] = mine
        return fixes


def _row_fixer(fixes: dict):
    """`fix(module, x, out)` for `stacked_block`: recompute the rows of candidates with their own weights."""
    def fix(module, x, out):
        for rows, weight in fixes.get(module, ()):
            out[rows] = F.linear(x[rows], weight, module.bias)
        return out
    return fix
