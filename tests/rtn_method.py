"""A compression method written outside the package, in one file: round-to-nearest int8/int4 per linear layer.

It exists to show (and test) that a new kind is one file: registering it gives it the run
skeleton, the CLI subcommand and recipe section, the shared baselines, evaluation, export and
the report, with no change anywhere else. Levels are symmetric per-group RTN at 8 and 4 bits;
a level costs its exact bits, one fp16 scale per group included.
"""

from __future__ import annotations

import torch

from evopress.compress.depth import DropPlan
from evopress.config import doc, section
from evopress.methods import Bank, Method, register
from evopress.search import Space, Unit, band_below

BITS = (8, 4)


@section
class RTNConfig:
    bits: float = doc(6.0, "average bits per linear weight, scales included")
    group: int = doc(32, "weights per fp16 scale")


def rtn(w: torch.Tensor, bits: int, group: int) -> torch.Tensor:
    """Symmetric absmax round-to-nearest per group of `group` weights along a row."""
    top = 2 ** (bits - 1) - 1
    g = w.reshape(-1, group)
    scale = g.abs().amax(dim=1, keepdim=True).clamp(min=1e-12) / top
    return (torch.round(g / scale).clamp(-top - 1, top) * scale).view_as(w)


class RTNBank(Bank):
    def __init__(self, adapter, names: list[str], group: int):
        self.adapter = adapter
        self.modules = {adapter.linear_name(b, n): m for b in range(adapter.num_blocks)
                        for n, m in adapter.linears(b).items()}
        self.names = names
        self.blocks = [b for b in range(adapter.num_blocks) for n in adapter.linears(b)]  # as `space` lists them
        self.dense = {n: self.modules[n].weight.data for n in names}
        self.levels = {n: [rtn(self.dense[n], b, group) for b in BITS] for n in names}

    def apply(self, genome) -> None:
        for i, name in enumerate(self.names):
            self.modules[name].weight.data = self.dense[name] if genome is None else self.levels[name][genome[i]]


@register
class RTN(Method):
    name, section, Config = "rtn", "rtn", RTNConfig
    help = "round-to-nearest int8/int4 per linear layer (an example method)"
    default_baselines = ("uniform", "random", "dp")
    cost_unit = "bits"

    def space(self, session) -> Space:
        a = session.adapter
        units = []
        for b in range(a.num_blocks):
            for n, m in a.linears(b).items():
                numel = m.weight.numel()
                costs = tuple(float(numel * bits + numel // self.options.group * 16) for bits in BITS)
                units.append(Unit(a.linear_name(b, n), f"block{b}", tuple(f"int{bits}" for bits in BITS), costs))
        self.numel = sum(a.linears(b)[n].weight.numel() for b in range(a.num_blocks) for n in a.linears(b))
        return Space(tuple(units))

    def budget(self, space):
        return band_below(self.options.bits * self.numel, space)

    def bank(self, run) -> RTNBank:
        return RTNBank(run.session.adapter, [u.name for u in run.space.units], self.options.group)

    def uniform(self, run):
        for level in range(len(BITS)):
            genome = (level,) * len(run.space)
            if run.budget.satisfied(run.space, genome):
                return genome
        return None

    def errors(self, run):
        bank = run.bank
        return [[float((lv - bank.dense[n]).pow(2).sum() / bank.dense[n].pow(2).sum()) for lv in bank.levels[n]]
                for n in bank.names]

    def describe_target(self) -> str:
        return f"{self.options.bits} bits per weight"

    def measures(self, space, genome) -> dict:
        return {"bits/weight": space.cost(genome) / self.numel}

    def export(self, run, genome, out, fmt: str) -> dict:
        from evopress.export import export

        adapter = run.session.adapter
        run.bank.apply(genome)
        report = export(adapter, DropPlan.dense(adapter.num_blocks), run.session.tokenizer, out, overwrite=True)
        return {"bytes_on_disk": report.bytes_on_disk, "bits": run.space.cost(genome)}
