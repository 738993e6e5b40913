"""KL fitness of per-layer variants (sparsity levels, ...), candidates stacked, each from its first change.

Offspring differ from their parent in a few units, so every block before a candidate's first
changed unit computes exactly what the parent computes. For one row batch:

1. the *reference* genome (per unit, the most common level of the call: the parent, for
   offspring of one parent) starts alone from the token embeddings;
2. a candidate joins the stack at its first changed block with a copy of the reference's
   state there, and from then on every block runs once on the whole stack
   (`ModelAdapter.stacked_block`); in a linear layer where some candidates use another level
   than the reference, just their rows are recomputed with their weights, written in place
   (row slices: no gathers, no host synchronisation). The reference leaves the stack once the
   last candidate has joined, unless candidates equal to it need its value;
3. the LM head and the KL to the teacher are computed on the final stack in position slices,
   each slice's teacher targets gathered once for all candidates.

The decoder itself runs once per row-batch shape, to record what it passes each block
(position embeddings, mask): with no padding these depend on the shape only.
Values equal the straightforward objective's (tests check). EvoPress §2.8 (arXiv 2410.14649)
motivates the reuse; the stacking is this implementation's.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import torch

from evopress.eval.batched import ReferenceKL, _run_reference
from evopress.eval.batches import device_index
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
        self._block_kwargs: dict[tuple, list[dict]] = {}

    def first_block(self, genome: Genome, reference: Genome) -> int | None:
        changed = [self.bank.blocks[u] for u, (a, b) in enumerate(zip(genome, reference)) if a != b]
        return min(changed) if changed else None

    def _prepare(self, genomes, only):
        """The consensus, and each candidate with its first changed block (once per call, not per row batch)."""
        reference = consensus(genomes)
        mine = [tuple(genomes[i]) for i in (range(len(genomes)) if only is None else only)]
        return reference, [(g, self.first_block(g, reference)) for g in mine]

    def _kwargs(self, ids: torch.Tensor) -> list[dict]:
        """What the decoder passes each block for row batches of this shape, from one real run."""
        key = tuple(ids.shape)
        if key not in self._block_kwargs:
            if len(self._block_kwargs) >= 16:  # shapes come from a few minibatch sizes; stay bounded
                self._block_kwargs.clear()
            self._block_kwargs[key] = _run_reference(self.adapter, ids, keep_all=True, keep_inputs=False)[1]
        return self._block_kwargs[key]

    def _rows(self, rows: list[int], n: int, reference: Genome, items) -> torch.Tensor:
        """KL sums on these rows, one per candidate."""
        if not items:
            return torch.empty(0, device=self.tokens.device)
        self.bank.apply(reference)
        ids = self._ids(rows, n)
        kwargs = self._kwargs(ids)
        row_index = self.targets.row_index(rows)
        starts = [start for _, start in items]
        same = [c for c, s in enumerate(starts) if s is None]
        todo = sorted((c for c, s in enumerate(starts) if s is not None), key=lambda c: starts[c])
        group = max(1, self.max_tokens // (len(rows) * n) - 1)  # the reference rides in the stack
        order, sums = [], []
        for i in range(0, max(len(todo), 1), group):
            part, keep = todo[i:i + group], bool(same) and i == 0
            final = self._stack(ids, [items[c][0] for c in part], [starts[c] for c in part], reference,
                                kwargs, keep)
            kl = self._kl(final, len(part) + keep, row_index, n)
            if keep:  # the reference's value, for every candidate equal to it
                order += same
                sums.append(kl[:1].expand(len(same)))
            order += part
            sums.append(kl[int(keep):])
        out = torch.empty(len(items), device=final.device)
        return out.index_copy_(0, device_index(order, out.device), torch.cat(sums))

    def _stack(self, ids, genomes, starts, reference, kwargs, keep: bool) -> torch.Tensor:
        """Final normed states `[(keep + len(genomes)) * rows, n, h]`: the reference's (when `keep`)
        then the candidates', sorted by first changed block, all run in one stack from block 0."""
        rows = ids.shape[0]
        hidden, lead = self.adapter.embed(ids), True  # lead: the reference's rows open the stack
        joined = 0
        for b in range(self.adapter.num_blocks):
            new = starts.count(b)
            if new:
                state = hidden[:rows]
                if not keep and b == starts[-1]:  # the last candidates join: the reference is done
                    hidden, lead = hidden[rows:], False
                hidden = torch.cat([hidden, state.repeat(new, 1, 1)])
                joined += new
            fix = _row_fixer(self._fixes(b, genomes[:joined], reference, rows, rows if lead else 0))
            hidden = self.adapter.stacked_block(b, hidden, kwargs[b], hidden.shape[0] // rows, fix)
        return self.adapter.final_norm()(hidden)

    def _fixes(self, block: int, genomes, reference, rows: int, base: int) -> dict:
        """Per linear module of the block, (row slice, weight) of each candidate that leaves the
        reference; candidate `j`'s rows start at `base + j * rows`."""
        fixes = {}
        for u in self.units_of[block]:
            name = self.bank.names[u]
            mine = [(slice(base + j * rows, base + (j + 1) * rows), self.bank.weight(name, g[u]))
                    for j, g in enumerate(genomes) if g[u] != reference[u]]
            if mine:
                fixes[self.bank.modules[name]] = mine
        return fixes


def _row_fixer(fixes: dict):
    """`fix(module, x, out)` for `stacked_block`: recompute the rows of candidates with their own
    weights, written straight into `out` (one matmul each, no temporary)."""
    def fix(module, x, out):
        for rows, weight in fixes.get(module, ()):
            x_rows = x[rows].reshape(-1, x.shape[-1])
            out_rows = out[rows].view(-1, out.shape[-1])  # a view of out: raises rather than copy
            if module.bias is None:
                torch.mm(x_rows, weight.t(), out=out_rows)
            else:
                torch.addmm(module.bias, x_rows, weight.t(), out=out_rows)
        return out
    return fix
