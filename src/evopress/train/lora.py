"""Rank-r adapters: training a compressed model whose fp32 masters and AdamW moments do not fit.

Full training keeps 16 bytes a parameter (fp32 master, two moments, gradient): 128 GB for an 8B
model, more than one GPU beside the model and a search's levels. LoRA (Hu et al., arXiv
2106.09685) freezes every weight and trains W + s * B A per linear layer, A (r x in) random, B
(out x r) zero, so training starts at the model itself. Pruned structure cannot regrow: B's rows
where W's row is zero and A's columns where W's column is zero are multiplied by zero in every
forward, so the update has W's zero rows and columns (pruned heads and channels, dropped
sublayers). Scattered zeros (unstructured sparsity, a quantization grid's zero) are not of that
form; such a model is refused rather than trained into a dense one.

    with Adapters(model, cfg, steps) as a:
        for batch in batches:
            a.step(lm_loss(model, batch))
"""

from __future__ import annotations

import torch

from evopress.errors import RecipeError
from evopress.train.trainer import Trainer

SCATTERED = 1e-3  # zeros inside a layer's kept rows x columns beyond this fraction: not structured


class Adapters(Trainer):
    """fp32 rank-`cfg.lora_rank` adapters on every linear layer of `model`, AdamW, for `total_steps` steps."""

    def __init__(self, model, cfg, total_steps: int):
        self.model, self.cfg, self.total_steps, self.steps = model, cfg, max(1, total_steps), 0
        self.frozen = [(p, p.requires_grad, p.data) for p in model.parameters()]
        self.linears = [(name, m) for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
        self.masters, self.parts, self.hooks = [], [], []
        for i, (name, linear) in enumerate(self.linears):
            rows, cols = _kept(name, linear.weight)
            a, b = _pair(linear.weight, cfg.lora_rank, seed=i)
            self.masters += [a, b]
            self.parts.append((a, b, rows, cols))
            self.hooks.append(linear.register_forward_hook(_adapted(a, b, rows, cols)))
        for p, _, data in self.frozen:
            p.requires_grad_(False)
            if data.is_inference():  # a bank's level: autograd cannot save it for the backward, a copy it can
                p.data = data.clone()
        self.optimizer = self.adamw()

    def step(self, loss: torch.Tensor) -> torch.Tensor:
        """Backward `loss`, one AdamW step on the adapters; returns the loss (detached, on the device)."""
        loss.backward()
        self.update()
        self.steps += 1
        return loss.detach()

    def restore(self) -> None:
        """Take the adapters off and give the model its own tensors back (they were never changed)."""
        for hook in self.hooks:
            hook.remove()
        self.hooks = []
        for p, grad, data in self.frozen:
            p.requires_grad_(grad)  # before the data, as in Masters.restore
            p.data = data

    def trained(self) -> list[torch.Tensor]:
        """The adapted weights merged, in the model's dtype, in `model.parameters()` order."""
        merged = {id(linear.weight): _delta(*part).to(linear.weight.dtype) + linear.weight.detach()
                  for (_, linear), part in zip(self.linears, self.parts)}
        return [merged.get(id(p), p.detach()) for p, _, _ in self.frozen]


def _kept(name: str, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The rows and columns of `weight` that are not wholly zero; refuses scattered zeros."""
    nonzero = weight.detach() != 0
    rows, cols = nonzero.any(1), nonzero.any(0)
    inside = int(rows.sum()) * int(cols.sum())
    if inside - int(nonzero.sum()) > SCATTERED * inside:
        raise RecipeError(f"{name} has zeros scattered inside its kept rows and columns (unstructured sparsity or "
                          "a quantization grid), which adapters would fill in; train this model with --lora-rank 0")
    return rows, cols


def _pair(weight: torch.Tensor, rank: int, seed: int) -> tuple[torch.nn.Parameter, torch.nn.Parameter]:
    """A ~ N(0, 1/in) from (seed) alone, so a resumed search starts every candidate the same; B = 0."""
    out_features, in_features = weight.shape
    a = torch.randn(rank, in_features, generator=torch.Generator().manual_seed(seed)) / in_features ** 0.5
    b = torch.zeros(out_features, rank)
    return (torch.nn.Parameter(a.to(weight.device)), torch.nn.Parameter(b.to(weight.device)))


def _delta(a, b, rows, cols) -> torch.Tensor:
    """The update B A as a matrix, with the weight's zero rows and columns (for merging)."""
    return (b * rows[:, None]) @ (a * cols)


def _adapted(a, b, rows, cols):
    def hook(module, args, out):
        x = args[0]
        down = x @ (a * cols).to(x.dtype).T  # rank-r: the update is never formed as a matrix
        return out + down @ (b * rows[:, None]).to(x.dtype).T
    return hook
