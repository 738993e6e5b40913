"""KL fitness of many depth plans at once, each candidate starting where it leaves the parent.

The straightforward objective (`evopress.eval.objective.KLObjective`) runs every candidate
through the whole model, one after the other: for a small model on a GPU that is thousands of
tiny kernel launches per generation, and the blocks before a candidate's first change are
recomputed although they equal the parent's. Here, for one minibatch:

1. the *reference* plan (per sublayer, the majority of the candidates: the parent, for
   offspring of one parent) runs once through the decoder, and hooks keep every block's input
   and the keyword arguments the decoder passes it;
2. a candidate joins at the first block where its plan differs from the reference, from the
   kept input; from there all joined candidates run together, each sublayer once on the stack
   of the candidates that keep it (`ModelAdapter.residual_step`);
3. the LM head and the KL to the teacher are computed in position slices, per candidate.

Candidates equal to the reference get the reference's value. Mathematically every value is
the one the straightforward objective computes; tests check they agree to float tolerance, and
that a search gives the same result with either. EvoPress §2.8 (arXiv 2410.14649) motivates
the reuse; the batching is this implementation's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from evopress.errors import RecipeError
from evopress.eval.batches import check_tokens, device_index, plan_segments, segment_batches
from evopress.eval.forward import _decoder_and_head, default_chunk_tokens, model_device
from evopress.eval.metrics import _kl_sum
from evopress.eval.minibatch import sample_minibatch
from evopress.eval.teacher import TeacherTargets
from evopress.models.capture import _repeat_batch
from evopress.search.fidelity import Fidelity

Genome = tuple[int, ...]
KINDS = ("attn", "mlp")


def majority_plan(plans: Sequence) -> tuple[tuple[bool, ...], tuple[bool, ...]]:
    """Per sublayer, dropped iff most plans drop it (ties: kept)."""
    half = len(plans) / 2
    return tuple(tuple(sum(getattr(p, kind)[b] for p in plans) > half for b in range(len(plans[0].attn)))
                 for kind in KINDS)


class ReferenceKL:
    """What the evaluators that reuse a reference run share: the `KLObjective` contract
    `(genomes, fidelity, only) -> [KL]`, minibatch and row batches, and the KL of final states.

    A subclass gives `_prepare(genomes, only) -> (reference, items)` (the reference is always the
    whole call's) and `_rows(rows, n, reference, items)`: the KL sums of the items on these rows.
    """

    fitness = "kl"

    def __init__(self, adapter, tokens: torch.Tensor, targets: TeacherTargets, seed: int = 0,
                 batch_size: int = 8, max_tokens: int = 1 << 16, chunk_tokens: int | None = None,
                 compile: str | None = None):
        """`compile`: a torch.compile backend for the KL and the adapter's steps ("inductor" on a GPU
        fuses the vocabulary passes and the elementwise work between matmuls)."""
        check_tokens(tokens)
        targets.check(tokens)
        if max_tokens < 1:
            raise RecipeError(f"search.stack_tokens must be a positive number of tokens, got {max_tokens}")
        self.adapter, self.targets = adapter, targets
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

    def describe(self) -> dict:
        n_seq, seq_len = self.tokens.shape
        return {"fitness": "kl", "seed": self.seed, "calibration_rows": n_seq, "calibration_seq_len": seq_len,
                "batch_size": self.batch_size, **self.targets.describe()}

    def __call__(self, genomes: Sequence[Genome], fidelity: Fidelity,
                 only: Sequence[int] | None = None) -> list[float]:
        """Values of `genomes` (or of `genomes[i] for i in only`)."""
        n_seq, seq_len = self.tokens.shape
        batch = sample_minibatch(n_seq, seq_len - 1, fidelity.tokens, self.seed, fidelity.draw)
        reference, items = self._prepare(genomes, only)
        sums = torch.zeros(len(items), device=model_device(self.model))
        segments = plan_segments(self.tokens, batch.rows, batch.positions)
        with torch.inference_mode():
            for rows, n in segment_batches(segments, self.batch_size):
                sums += self._rows(rows, n, reference, items)
        self.tokens_evaluated += batch.tokens * len(items)
        self.candidates_evaluated += len(items)
        return [float(v) for v in (sums / batch.tokens).tolist()]

    def _ids(self, rows: list[int], n: int) -> torch.Tensor:
        """The token ids of a row batch (a Python-list index would wait for the device)."""
        return self.tokens[device_index(rows, self.tokens.device), :n]

    def _kl(self, final: torch.Tensor, count: int, row_index: torch.Tensor, n: int) -> torch.Tensor:
        """`[count]` KL sums of the candidates stacked in `final` (see `kl_sums_of_stack`)."""
        return kl_sums_of_stack(self.head, self.targets, final, count, row_index, n, self.chunk, self.kl_fn)


class BatchedDepthKL(ReferenceKL):
    """Same contract as `KLObjective`: `(genomes, fidelity) -> [KL]`, deterministic per genome."""

    def __init__(self, adapter, plan_of: Callable[[Genome], object], tokens: torch.Tensor,
                 targets: TeacherTargets, seed: int = 0, batch_size: int = 8,
                 max_tokens: int = 1 << 16, chunk_tokens: int | None = None, compile: str | None = None):
        super().__init__(adapter, tokens, targets, seed, batch_size, max_tokens, chunk_tokens, compile)
        self.plan_of = plan_of

    def _prepare(self, genomes, only):
        plans = [self.plan_of(g) for g in genomes]
        reference = majority_plan(plans)
        if only is not None:
            plans = [plans[i] for i in only]
        return reference, [(p.attn, p.mlp) for p in plans]

    def _rows(self, rows: list[int], n: int, reference, masks) -> torch.Tensor:
        """KL sums on these rows, one per candidate."""
        from evopress.compress.depth import DropPlan

        adapter = self.adapter
        adapter.apply_plan(DropPlan(*reference))
        inputs, kwargs, final = _run_reference(adapter, self._ids(rows, n))
        row_index = self.targets.row_index(rows)
        out = torch.empty(len(masks) + 1, device=final.device)
        out[-1] = self._kl(final, 1, row_index, n)[0]
        first = [_first_difference(m, reference) for m in masks]
        for c, f in enumerate(first):
            if f is None:
                out[c] = out[-1]
        todo = [c for c, f in enumerate(first) if f is not None]
        group = max(1, self.max_tokens // (len(rows) * n))
        for start in range(0, len(todo), group):
            part = todo[start:start + group]
            finals = self._candidates(part, [first[c] for c in part], masks, inputs, kwargs, len(rows))
            for i, c in enumerate(part):
                out[c] = self._kl(finals[i], 1, row_index, n)[0]
        return out[:-1]

    def _candidates(self, part, starts, masks, inputs, kwargs, rows):
        """Final normed hidden states of the candidates in `part`, run from their first change."""
        adapter = self.adapter
        steps, index = _schedule([masks[c] for c in part], starts, rows, adapter.num_blocks)
        index = index.to(inputs[0].device, non_blocking=True)  # one copy per group, no sync per sublayer
        hidden = None  # [len(joined) * rows, n, h], candidates in join order
        joined: list[int] = []
        for b, new, work in steps:
            if new:
                fresh = inputs[b].repeat(len(new), 1, 1)
                hidden = fresh if hidden is None else torch.cat([hidden, fresh])
                joined += new
            for kind, span, count in work:
                args = {key: _repeat_batch(v, rows, count) for key, v in kwargs[b].items()}
                if span is None:  # every joined candidate keeps it: no gather
                    hidden = adapter.residual_step(b, kind, hidden, args)
                else:
                    sel = index[span[0]:span[1]]
                    hidden[sel] = adapter.residual_step(b, kind, hidden[sel], args)
        hidden = adapter.final_norm()(hidden)
        order = sorted(range(len(joined)), key=lambda j: joined[j])
        return [hidden[j * rows:(j + 1) * rows] for j in order]


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


def _schedule(masks, starts, rows: int, num_blocks: int):
    """The work of a candidate group, planned on the host before anything runs on the device.

    Returns `steps`: per block `(block, candidates joining here, [(kind, span, count)])` where
    `span` slices the returned flat index tensor (the stacked rows that keep that sublayer) or is
    None when every joined candidate keeps it, and `count` is how many candidates run it.
    """
    steps, flat, joined = [], [], []
    for b in range(num_blocks):
        new = [i for i, s in enumerate(starts) if s == b]
        joined += new
        work = []
        for k, kind in enumerate(KINDS):
            keep = [j for j, i in enumerate(joined) if not masks[i][k][b]]
            if not keep:
                continue
            if len(keep) == len(joined):
                work.append((kind, None, len(keep)))
                continue
            span = (len(flat), len(flat) + len(keep) * rows)
            flat += [j * rows + r for j in keep for r in range(rows)]
            work.append((kind, span, len(keep)))
        if joined:
            steps.append((b, new, work))
    return steps, torch.tensor(flat, dtype=torch.long)


def _first_difference(mask, reference) -> int | None:
    """The first block where a candidate's (attn, mlp) drop mask differs from the reference."""
    for b in range(len(reference[0])):
        if mask[0][b] != reference[0][b] or mask[1][b] != reference[1][b]:
            return b
    return None


def _run_reference(adapter, ids: torch.Tensor, keep_all: bool = False, keep_inputs: bool = True):
    """The decoder on `ids` as the model stands: each block's input and kwargs, and the final normed states.

    `keep_all` keeps every keyword the block receives (to call whole blocks again), else only the
    position embeddings and attention mask (for `residual_step`). Without `keep_inputs` the block
    inputs are not kept (an empty list; at 8B they are gigabytes).
    """
    inputs, kwargs, handles = [], [], []

    def keep(module, args, kw):
        if keep_inputs:
            inputs.append(args[0] if args else kw["hidden_states"])
        kwargs.append({k: v for k, v in kw.items()
                       if k != "hidden_states" and (keep_all or k in ("position_embeddings", "attention_mask"))})

    for block in adapter.blocks():
        handles.append(block.register_forward_pre_hook(keep, with_kwargs=True))
    try:
        out = adapter.decoder(input_ids=ids, use_cache=False)
    finally:
        for h in handles:
            h.remove()
    final = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
    return inputs, kwargs, final
