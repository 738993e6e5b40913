"""Structured levels as data: what each level of a sublayer removes and what it costs, in parameters.

DarwinLM's levels are hand-set lists of removed columns that mean different things per model
(its §1.2: latency steps measured on one GPU for one model, reused for others), and its budget is
a level sum per module kind. Here a sublayer's levels are equal steps of its own parameters, with
"removed" as the last, and each (layer, level) costs its exact parameter count, so a budget in
parameters (or a fraction of them) can trade attention against MLP.

Attention counts q, k, v and o (with their biases where the model has them) for the kept query and
KV heads; the MLP counts gate, up and down for the kept channels.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Attention:
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    qkv_bias: bool = False
    o_bias: bool = False
    qk_norm: bool = False  # one head_dim-sized norm weight each for q and k (Qwen3), shared by the heads

    @classmethod
    def of(cls, geometry) -> "Attention":
        """From a model's `evopress.models.geometry.Geometry`."""
        g = geometry
        return cls(g.hidden_size, g.num_heads, g.num_kv_heads, g.head_dim, g.qkv_bias, g.o_bias, g.qk_norm)

    def params(self, heads: int, kv_heads: int) -> int:
        """Parameters of q, k, v and o with `heads` query heads and `kv_heads` KV heads kept."""
        if heads == 0:
            return 0  # the sublayer is gone, o's bias with it
        q = heads * self.head_dim * (2 * self.hidden + self.qkv_bias)
        kv = 2 * kv_heads * self.head_dim * (self.hidden + self.qkv_bias)
        return q + kv + self.o_bias * self.hidden + 2 * self.qk_norm * self.head_dim

    @property
    def full(self) -> int:
        return self.params(self.heads, self.kv_heads)

    def removed_targets(self, steps: int = 10) -> list[int]:
        """Parameters level i removes at least: i/steps of the sublayer, the last everything."""
        return [round(self.full * i / steps) for i in range(steps + 1)]


@dataclass(frozen=True)
class MLP:
    hidden: int
    intermediate: int
    bias: bool = False

    @classmethod
    def of(cls, geometry) -> "MLP":
        return cls(geometry.hidden_size, geometry.intermediate_size, geometry.mlp_bias)

    def params(self, channels: int) -> int:
        """Parameters of gate, up and down with `channels` intermediate channels kept."""
        if channels == 0:
            return 0
        return channels * (3 * self.hidden + 2 * self.bias) + self.bias * self.hidden

    def removed_channels(self, steps: int = 10, multiple: int = 32) -> list[int]:
        """Channels level i removes: i/steps of them rounded to `multiple`, the last all, ascending
        and without repeats (a small MLP has fewer levels than `steps`)."""
        out = [min(self.intermediate, round(self.intermediate * i / steps / multiple) * multiple)
               for i in range(steps)] + [self.intermediate]
        return sorted(set(out))
