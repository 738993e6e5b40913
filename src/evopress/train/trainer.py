"""Training a compressed model without undoing its compression: fp32 masters, AdamW, frozen zeros.

DarwinLM (arXiv 2502.07780) trains candidates during selection and the result afterwards. Its
released code trains pure bf16 weights at lr 1e-5, where most updates are below half an ulp and
rounded away, and trains the zeroed columns of o_proj/down_proj back to life (its §3.3 defects,
see reference/darwinlm.md §8). Here:

- the optimizer steps fp32 master copies; the model runs on its own dtype, refreshed each step;
- every weight matrix keeps its exact zeros: pruned heads and channels (zero columns of the
  output projection, whose feeding rows then get no gradient), unstructured sparsity and
  dropped sublayers (zero output projections) stay as they are;
- the model's own tensors are set aside and put back by `restore()`, so a candidate's training
  never touches the levels a bank holds, and the next candidate starts from the same weights.

    with Masters(model, cfg, steps) as m:
        for batch in batches:
            m.step(lm_loss(model, batch))
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F


class Trainer:
    """What every trainer shares: the learning-rate schedule, the optimizer update, restore on exit."""

    cfg: object
    total_steps: int
    steps: int
    masters: list[torch.Tensor]
    optimizer: torch.optim.Optimizer

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.restore()

    def restore(self) -> None:
        raise NotImplementedError

    def lr(self, step: int) -> float:
        """Linear warm-up, then constant or cosine down to a tenth (the DarwinLM post-training recipe)."""
        cfg = self.cfg
        if step < cfg.warmup_steps:
            return cfg.lr * (step + 1) / cfg.warmup_steps
        if cfg.schedule == "constant":
            return cfg.lr
        done = (step - cfg.warmup_steps) / max(1, self.total_steps - cfg.warmup_steps)
        return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, done))))

    def adamw(self) -> torch.optim.Optimizer:
        cfg, on_gpu = self.cfg, bool(self.masters) and self.masters[0].is_cuda
        # fused: one kernel for every tensor on a GPU (the per-tensor loop dominates small models' steps)
        return torch.optim.AdamW(self.masters, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay,
                                 eps=1e-8, fused=on_gpu)

    def update(self) -> None:
        """Clip, set this step's learning rate, step AdamW on the masters' gradients, drop them."""
        if self.cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.masters, self.cfg.grad_clip)
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr(self.steps)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)


class Masters(Trainer):
    """fp32 master weights and AdamW over every parameter of `model`, for `total_steps` steps."""

    def __init__(self, model, cfg, total_steps: int):
        self.model, self.cfg, self.total_steps, self.steps = model, cfg, max(1, total_steps), 0
        self.params = list(model.parameters())  # tied weights once
        self.saved = [(p.data, p.requires_grad) for p in self.params]
        self.masters, self.masks = [], []
        for p in self.params:
            master = torch.nn.Parameter(p.data.detach().float().clone())  # fp32, outside any inference mode
            self.masters.append(master)
            self.masks.append(master != 0 if p.dim() == 2 and not bool(master.all()) else None)
            # the model's private copy: shares the master's memory in fp32, a cast of it otherwise
            p.data = master.data if p.dtype == torch.float32 else master.data.to(p.dtype)
            p.requires_grad_(True)
        self.optimizer = self.adamw()

    def step(self, loss: torch.Tensor) -> torch.Tensor:
        """Backward `loss`, one optimizer step on the masters, the model refreshed; returns the loss
        (detached, still on the device: reading it is a host sync, left to callers that log it)."""
        loss.backward()
        for p, master in zip(self.params, self.masters):
            master.grad = None if p.grad is None else p.grad.float()
            p.grad = None
        self.update()
        with torch.no_grad():
            for p, master, mask in zip(self.params, self.masters, self.masks):
                if mask is not None:
                    master.mul_(mask)  # Adam moves a weight with zero gradient by nothing; decay would
                if p.data.data_ptr() != master.data_ptr():
                    p.data.copy_(master)
        self.steps += 1
        return loss.detach()

    def restore(self) -> None:
        """Put the model's own tensors back (the trained ones are dropped)."""
        for p, (data, grad) in zip(self.params, self.saved):
            p.grad = None
            p.requires_grad_(grad)  # before the data: a bank's level may be an inference-mode tensor
            p.data = data

    def trained(self) -> list[torch.Tensor]:
        """The trained weights, in the model's dtype, in `model.parameters()` order."""
        return [master.detach().to(data.dtype) for master, (data, _) in zip(self.masters, self.saved)]


def logprobs(model, ids: torch.Tensor) -> torch.Tensor:
    """`model`'s next-token log-probabilities (fp32) at every predicted position of `ids`."""
    return torch.log_softmax(model(input_ids=ids, use_cache=False).logits[:, :-1].float(), -1)


def lm_loss(model, ids: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy of `model` on the rows of `ids`."""
    return F.nll_loss(logprobs(model, ids).flatten(0, 1), ids[:, 1:].flatten())


def kd_loss(model, ids: torch.Tensor, teacher_logprobs: torch.Tensor) -> torch.Tensor:
    """Mean per-token KL(teacher || model) over the predicted positions of `ids` (the search's fitness)."""
    logq = logprobs(model, ids)
    logp = teacher_logprobs[:, :logq.shape[1]].float()
    return (logp.exp() * (logp - logq)).sum(-1).mean()


def sequences(pool: torch.Tensor, tokens: int, draw: int, seed: int = 0) -> torch.Tensor:
    """The pool rows a stage trains on: enough whole rows for `tokens`, drawn without repeats from
    (seed, draw) alone, so every candidate of the stage (and a resumed search) gets the same ones
    in the same order."""
    rows = -(-tokens // pool.shape[1])
    if rows > pool.shape[0]:
        raise ValueError(f"{tokens} training tokens need {rows} rows of the pool, which has {pool.shape[0]}")
    order = torch.randperm(pool.shape[0], generator=torch.Generator().manual_seed(seed * 1_000_003 + draw))
    return pool[order[:rows].to(pool.device)]


def batches(model, rows: torch.Tensor, cfg, set_dense: Callable[[], object]) -> list:
    """`rows` in steps of `cfg.train_batch` sequences: ids for `--loss lm`; for `--loss kd`, (ids, the
    dense model's log-probs on them), computed once by `set_dense()` and the model, then shared
    by every candidate (tokens x vocabulary values in the model's dtype: fine for small
    vocabularies and pools; at 8B with 200k tokens that is 51 GB, so use lm there)."""
    chunks = list(rows.split(cfg.train_batch))
    if cfg.loss == "lm":
        return chunks
    set_dense()
    dtype = next(model.parameters()).dtype
    with torch.no_grad():
        return [(ids, logprobs(model, ids).to(dtype)) for ids in chunks]


def loss_for(cfg) -> Callable:
    """`loss_fn(model, batch)` for the batches `batches` makes."""
    return lm_loss if cfg.loss == "lm" else (lambda model, batch: kd_loss(model, *batch))


def train(model, batches, cfg, loss_fn) -> Trainer:
    """Train `model` on `batches` (id tensors, or what `loss_fn(model, batch)` takes); returns the
    trainer, Masters or (with `cfg.lora_rank`) Adapters: the caller restores, or keeps `trained()`."""
    from evopress.train.lora import Adapters

    masters = (Adapters if cfg.lora_rank else Masters)(model, cfg, len(batches))
    with torch.enable_grad():
        for ids in batches:
            masters.step(loss_fn(model, ids))
    return masters
