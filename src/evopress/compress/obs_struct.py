"""Structured levels of one linear layer from one Hessian: OBS over groups of input columns.

ZipLM (Kurtic et al. 2023) as DarwinLM builds its database (arXiv 2502.07780, §3; the reference's
`fast_obc_struct`): with H = (2/N) Σ x xᵀ of the layer's inputs, damped, and H⁻¹ its inverse,
removing the input columns S of W (rows = outputs) costs

    loss(S) = ½ tr(W_S (H⁻¹_SS)⁻¹ W_Sᵀ),

and the best update of the columns that stay, and of the inverse, is

    W ← W − W_S (H⁻¹_SS)⁻¹ H⁻¹_S,:        H⁻¹ ← H⁻¹ − H⁻¹_:,S (H⁻¹_SS)⁻¹ H⁻¹_S,:

(the downdated H⁻¹ is the inverse of H without S, so removals compose: S₁ then S₂ is S₁ ∪ S₂ at once).
Greedy elimination removes the cheapest unit at each step and snapshots the weights as levels.

MLP (`channel_levels`): units are the intermediate channels (columns of `down_proj`; the rows of
gate/up follow), removed `group` at a time, the `group` with the least single-channel loss
together (block OBS) for speed. Attention (`head_levels`): units are query heads (`head_dim`
columns of `o_proj`; the rows of q follow). Every state keeps the same number of query heads in
each kept KV group, the shape transformers' and vLLM's grouped attention can run: a step removes
either one head from every kept group or one whole group (its KV head goes too), whichever costs
the least loss per parameter removed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


class Eliminator:
    """W and H⁻¹ of one layer under greedy removal of input columns; `kept` says which remain."""

    def __init__(self, weight: torch.Tensor, hessian: torch.Tensor, damp: float = 0.01):
        h = hessian.double().clone()
        dead = torch.diagonal(h) == 0  # inputs never seen: nothing to lose, nothing to update from
        h[dead, dead] = 1.0
        h.diagonal().add_(damp * torch.diagonal(h).mean())
        self.hinv = torch.cholesky_inverse(torch.linalg.cholesky(h)).float()
        self.w = weight.float().clone()
        self.w[:, dead] = 0
        self.kept = torch.ones(weight.shape[1], dtype=torch.bool, device=weight.device)

    def channel_losses(self) -> torch.Tensor:
        """Per kept column j: ½ ‖W_:,j‖² / H⁻¹_jj (inf where already removed)."""
        loss = 0.5 * self.w.square().sum(0) / torch.diagonal(self.hinv)
        return loss.masked_fill(~self.kept, float("inf"))

    def loss(self, cols: torch.Tensor) -> torch.Tensor:
        """loss(S) of each set in `cols` ([sets, size] column indices), removed together; [sets]."""
        b = self.hinv[cols.unsqueeze(-1), cols.unsqueeze(-2)]  # [sets, size, size]
        ws = self.w[:, cols].permute(1, 2, 0)  # [sets, size, rows]
        return 0.5 * (ws * torch.linalg.solve(b, ws)).sum((1, 2))

    def remove(self, cols: torch.Tensor) -> None:
        """Remove the columns `cols` (1-D), with the OBS update of the rest and of H⁻¹."""
        b = self.hinv[cols][:, cols]
        x = torch.linalg.solve(b, self.hinv[cols])  # (H⁻¹_SS)⁻¹ H⁻¹_S,:
        self.w -= self.w[:, cols] @ x
        self.hinv -= self.hinv[:, cols] @ x
        self.w[:, cols] = 0
        self.kept[cols] = False
        # the removed rows and columns of H⁻¹ are zero now, up to rounding: make them inert exactly
        self.hinv[cols] = 0
        self.hinv[:, cols] = 0
        self.hinv[cols, cols] = 1.0

    def snapshot(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(kept column indices, W restricted to them): what a level stores."""
        idx = torch.nonzero(self.kept).flatten()
        return idx, self.w[:, idx].clone()


@torch.no_grad()
def channel_levels(weight: torch.Tensor, hessian: torch.Tensor, removed: list[int], group: int = 32,
                   damp: float = 0.01) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per entry of `removed` (channel counts, ascending), (kept channels, weight on them)."""
    if list(removed) != sorted(removed) or any(not 0 <= r <= weight.shape[1] for r in removed):
        raise ValueError(f"removed channel counts {removed} must ascend within 0..{weight.shape[1]}")
    e, out, done = Eliminator(weight, hessian, damp), [], 0
    for target in removed:
        while done < target:
            step = min(group, target - done)
            e.remove(torch.topk(e.channel_losses(), step, largest=False).indices)
            done += step
        out.append(e.snapshot())
    return out


@dataclass(frozen=True)
class HeadLevel:
    """One attention level: kept query heads (ascending), kept KV heads, and o_proj on the kept heads."""

    heads: tuple[int, ...]
    kv_heads: tuple[int, ...]
    o_weight: torch.Tensor  # [hidden, len(heads) * head_dim]


@torch.no_grad()
def head_levels(o_weight: torch.Tensor, hessian: torch.Tensor, num_heads: int, num_kv_heads: int,
                removed_params: list[int], damp: float = 0.01) -> list[HeadLevel]:
    """Per entry of `removed_params` (ascending), the first greedy state that removes at least that
    many parameters of q, k, v and o together (the last state removes them all)."""
    hidden, cols = o_weight.shape
    hd, per_group = cols // num_heads, num_heads // num_kv_heads
    head_params = 2 * hidden * hd  # a query head's rows of q and columns of o; a KV head's k and v rows
    e = Eliminator(o_weight, hessian, damp)
    groups = {g: list(range(g * per_group, (g + 1) * per_group)) for g in range(num_kv_heads)}
    removed, out = 0, []

    def columns(heads):
        return torch.tensor([h * hd + i for h in heads for i in range(hd)], device=o_weight.device)

    for target in removed_params:
        while removed < target and groups:
            heads = torch.tensor(sorted(h for hs in groups.values() for h in hs), device=o_weight.device)
            single = dict(zip(heads.tolist(), e.loss(columns(heads.tolist()).view(len(heads), hd)).tolist()))
            cheapest = [min(hs, key=single.__getitem__) for hs in groups.values()]
            options = [(e.loss(columns(cheapest)[None])[0] / (len(cheapest) * head_params), "one each", None)]
            if per_group > 1 or len(groups) > 1:
                for g, hs in groups.items():
                    whole = e.loss(columns(hs)[None])[0] / ((len(hs) + 1) * head_params)
                    options.append((whole, "group", g))
            _, kind, g = min(options, key=lambda o: float(o[0]))
            drop = cheapest if kind == "one each" else groups[g]
            e.remove(columns(drop))
            removed += len(drop) * head_params
            if kind == "group" or len(groups[next(iter(groups))]) == 1:
                removed += head_params * (1 if kind == "group" else len(groups))
                groups = {} if kind == "one each" else {k: v for k, v in groups.items() if k != g}
            else:
                groups = {k: [h for h in v if h not in drop] for k, v in groups.items()}
        heads = tuple(sorted(h for hs in groups.values() for h in hs))
        out.append(HeadLevel(heads, tuple(sorted(groups)), e.snapshot()[1]))
    return out
