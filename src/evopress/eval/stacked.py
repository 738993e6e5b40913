"""KL fitness of many genomes at once: candidates stacked, each from its first changed block.

The straightforward objective (`evopress.eval.objective.KLObjective`) runs every candidate
through the whole model, one after the other: for a small model on a GPU that is thousands of
tiny kernel launches per generation, and offspring differ from their parent in a few units, so
every block before a candidate's first change computes exactly what the parent computes. Here,
for one row batch:

1. the *reference* genome (per unit, the most common level of the call: the parent, for
   offspring of one parent) starts alone from the token embeddings;
2. a candidate joins the stack at its first changed block with a copy of the reference's
   state there, and from then on every block runs once on the whole stack: the method's bank
   says how (`Bank.block_step`: depth runs each sublayer on the rows of the candidates that
   keep it, sparsity recomputes the rows of candidates whose weights differ). The reference
   leaves the stack once the last candidate has joined, unless candidates equal to it need
   its value;
3. the LM head and the KL to the teacher are computed on the final stack in position slices,
   each slice's teacher targets gathered once for all candidates.

The decoder itself runs once per row-batch shape, to record what it passes each block
(position embeddings, mask): with no padding these depend on the shape only. Values equal the
straightforward objective's (tests check, for every registered method). EvoPress §2.8
(arXiv 2410.14649) motivates the reuse; the stacking is this implementation's.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import torch

from evopress.errors import RecipeError
from evopress.eval.batches import check_tokens, device_index, plan_segments, segment_batches
from evopress.eval.forward import _decoder_and_head, default_chunk_tokens, model_device
from evopress.eval.metrics import _kl_sum
from evopress.eval.minibatch import sample_minibatch
from evopress.eval.teacher import TeacherTargets
from evopress.search.fidelity import Fidelity

Genome = tuple[int, ...]


def consensus(genomes: Sequence[Genome]) -> Genome:
    """Per unit the most common level (ties: the lowest level), a stand-in for the parent."""
    out = []
    for levels in zip(*genomes):
        counts = Counter(levels)
        out.append(min(counts, key=lambda level: (-counts[level], level)))
    return tuple(out)


class StackedKL:
    """Same contract as `KLObjective`: `(genomes, fidelity, only) -> [KL]`, deterministic per genome.

    `bank` is the method's `evopress.methods.Bank`: `apply`, `blocks` (unit -> decoder block) and
    `block_step`. `compile`: a torch.compile backend for the KL and the adapter's steps
    ("inductor" on a GPU fuses the vocabulary passes and the elementwise work between matmuls).
    """

    fitness = "kl"

    def __init__(self, adapter, bank, tokens: torch.Tensor, targets: TeacherTargets, seed: int = 0,
                 batch_size: int = 8, max_tokens: int = 1 << 16, chunk_tokens: int | None = None,
                 compile: str | None = None):
        check_tokens(tokens)
        targets.check(tokens)
        if max_tokens < 1:
            raise RecipeError(f"search.stack_tokens must be a positive number of tokens, got {max_tokens}")
        self.adapter, self.bank, self.targets = adapter, bank, targets
        self.model = adapter.model
        self.tokens = tokens.to(model_device(self.model))
        self.seed, self.batch_size, self.max_tokens = seed, batch_size, max_tokens
        self.chunk = chunk_tokens or default_chunk_tokens(self.model)
        self.tokens_evaluated = self.candidates_evaluated = 0
        _, self.head = _decoder_and_head(self.model)
        self.kl_fn = _kl_sum
        if compile:
            self.kl_fn = torch.compile(_kl_sum, backend=compile)  # automatic dynamic: fixed sizes stay constants
            adapter.compile_steps(compile)
        self._block_kwargs: dict[tuple, list[dict]] = {}

    def describe(self) -> dict:
        n_seq, seq_len = self.tokens.shape
        return {"fitness": "kl", "seed": self.seed, "calibration_rows": n_seq, "calibration_seq_len": seq_len,
                "batch_size": self.batch_size, **self.targets.describe()}

    def __call__(self, genomes: Sequence[Genome], fidelity: Fidelity,
                 only: Sequence[int] | None = None) -> list[float]:
        """Values of `genomes` (or of `genomes[i] for i in only`, for a share of a split call)."""
        n_seq, seq_len = self.tokens.shape
        batch = sample_minibatch(n_seq, seq_len - 1, fidelity.tokens, self.seed, fidelity.draw)
        reference = consensus(genomes)  # always the whole call's, so a split call computes the same
        mine = [tuple(genomes[i]) for i in (range(len(genomes)) if only is None else only)]
        items = [(g, self.first_block(g, reference)) for g in mine]
        sums = torch.zeros(len(items), device=self.tokens.device)
        with torch.inference_mode():
            for rows, n in segment_batches(plan_segments(self.tokens, batch.rows, batch.positions), self.batch_size):
                sums += self._rows(rows, n, reference, items)
        self.tokens_evaluated += batch.tokens * len(items)
        self.candidates_evaluated += len(items)
        return [float(v) for v in (sums / batch.tokens).tolist()]

    def first_block(self, genome: Genome, reference: Genome) -> int | None:
        changed = [self.bank.blocks[u] for u, (a, b) in enumerate(zip(genome, reference)) if a != b]
        return min(changed) if changed else None

    def _rows(self, rows: list[int], n: int, reference: Genome, items) -> torch.Tensor:
        """KL sums on these rows, one per candidate."""
        if not items:
            return torch.empty(0, device=self.tokens.device)
        self.bank.apply(reference)
        ids = self.tokens[device_index(rows, self.tokens.device), :n]  # a list index would wait for the device
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
            kl = kl_sums_of_stack(self.head, self.targets, final, len(part) + keep, row_index, n, self.chunk,
                                  self.kl_fn)
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
            members = [reference] * lead + genomes[:joined]
            hidden = self.bank.block_step(b, hidden, kwargs[b], members, reference)
        return self.adapter.final_norm()(hidden)

    def _kwargs(self, ids: torch.Tensor) -> list[dict]:
        """What the decoder passes each block for row batches of this shape, from one real run."""
        key = tuple(ids.shape)
        if key not in self._block_kwargs:
            if len(self._block_kwargs) >= 16:  # shapes come from a few minibatch sizes; stay bounded
                self._block_kwargs.clear()
            self._block_kwargs[key] = block_kwargs(self.adapter, ids)
        return self._block_kwargs[key]


def kl_sums_of_stack(head, targets: TeacherTargets, final: torch.Tensor, count: int, row_index: torch.Tensor,
                     n: int, chunk: int, kl=_kl_sum) -> torch.Tensor:
    """Summed KL of each of `count` candidates stacked in `final` `[count * rows, n, h]`: a `[count]` tensor.

    All candidates share the rows, so each slice of positions gathers its teacher targets once
    for all of them, and a slice of the LM head's output spans as many candidates as fit in
    `chunk` positions (short calls score many candidates per launch)."""
    flat = final.view(count, -1, final.shape[-1])
    per = flat.shape[1]
    span = min(chunk, per)
    group = max(1, chunk // span)
    sums = flat.new_zeros(count, dtype=torch.float32)
    for start in range(0, per, span):
        stop = min(start + span, per)
        teacher = targets.gather(row_index, n, start, stop, final.device)
        for c in range(0, count, group):
            logits = head(flat[c:c + group, start:stop])  # upcast inside `kl`
            sums[c:c + group] += kl(logits, *teacher)
    return sums


def block_kwargs(adapter, ids: torch.Tensor) -> list[dict]:
    """Every keyword argument the decoder passes each block when run on `ids` (hidden states aside)."""
    kwargs, handles = [], []

    def keep(module, args, kw):
        kwargs.append({k: v for k, v in kw.items() if k != "hidden_states"})

    for block in adapter.blocks():
        handles.append(block.register_forward_pre_hook(keep, with_kwargs=True))
    try:
        adapter.decoder(input_ids=ids, use_cache=False)
    finally:
        for h in handles:
            h.remove()
    return kwargs
