"""Apply a sparsity genome to a live model from a complete variant store.

All variants are read once and kept in memory in their compact form (mask + values); a genome is
applied by decoding only the units whose level changed and rebinding their weight tensors
(EvoPress §2.8 re-reads every switched layer from disk instead). The dense weights are kept, so
the model can always return to the dense state (teacher targets, baselines).
"""

from __future__ import annotations

import torch

from evopress.database.codec import decode
from evopress.database.store import VariantStore
from evopress.errors import DatabaseError


class SparseBank:
    def __init__(self, adapter, store: VariantStore, device=None):
        store.require_complete()
        self.modules = {adapter.linear_name(b, n): m
                        for b in range(adapter.num_blocks) for n, m in adapter.linears(b).items()}
        self.names = [u["name"] for u in store.units]
        if set(self.names) != set(self.modules):
            raise DatabaseError(f"the database at {store.path} lists other linear layers than this model has; "
                                "use the database built for this model")
        device = device or next(adapter.model.parameters()).device
        self.dense = {name: m.weight.data for name, m in self.modules.items()}
        self.variants: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {}
        self.act_sq: dict[str, torch.Tensor] = {}
        for b in range(store.num_blocks):
            tensors = store.read_block(b, device)
            for u in (u for u in store.units if u["block"] == b):
                self.variants[u["name"]] = [(tensors[f"{u['name']}:{i}:mask"], tensors[f"{u['name']}:{i}:values"])
                                            for i in range(len(u["levels"]))]
                self.act_sq[u["name"]] = tensors[f"{u['name']}:act_sq"]
        self.current: dict[str, int | None] = {name: None for name in self.names}

    def weight(self, name: str, level: int | None) -> torch.Tensor:
        if level is None:
            return self.dense[name]
        mask, values = self.variants[name][level]
        return decode(mask, values, self.dense[name].shape).to(self.dense[name].dtype)

    def apply(self, genome) -> int:
        """Set every unit to its level in `genome` (None = dense); returns how many changed."""
        changed = 0
        for name, level in zip(self.names, genome):
            if self.current[name] != level:
                self.modules[name].weight.data = self.weight(name, level)
                self.current[name] = level
                changed += 1
        return changed

    def restore(self) -> None:
        self.apply([None] * len(self.names))
