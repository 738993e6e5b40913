"""Every level of every linear layer, resident in memory, switched by rebinding weight tensors.

Loading re-derives each level's weights from the store's masks (SparseGPT repeats its sweep with
the masks given, exactly; Wanda and magnitude keep the dense values) and keeps them compact, a
packed mask plus the kept values, on the model's device. A genome is applied by rebinding the
weight tensors of the units whose level changed (EvoPress §2.8 re-reads every switched layer
from disk instead). Decoded weights are cached up to `cache_bytes`, most recently used first,
so the levels a search keeps returning to cost nothing after the first time; the default budget
is set at the first decode, once the teacher targets are resident, from the memory still free.
The dense weights are kept, so the model can always return to the dense state (teacher targets,
baselines).

`LevelBank` is the `evopress.methods.Bank` of every method with a database: `apply(genome)` for
the straightforward objective, `block_step` for the stacked evaluator (`evopress.eval.stacked`).
A method's bank says how one block's levels load (`_load_block`) and how one decodes (`decode`);
`SparseBank` holds sparsity levels as masks and kept values.
"""

from __future__ import annotations

from collections import OrderedDict

import torch

from evopress.compress.sparsegpt import levels_from_masks
from evopress.database.codec import decode, encode, unpack, unpack_upper
from evopress.database.store import VariantStore
from evopress.errors import DatabaseError


class LevelBank:
    def __init__(self, adapter, store: VariantStore, device=None, cache_bytes: int | None = None):
        store.require_complete()
        linears = {adapter.linear_name(b, n): m
                   for b in range(adapter.num_blocks) for n, m in adapter.linears(b).items()}
        self.adapter = adapter
        self.names = [u["name"] for u in store.units]
        self.blocks = [u["block"] for u in store.units]
        self.units_of = [[u for u, b in enumerate(self.blocks) if b == block] for block in range(adapter.num_blocks)]
        if not set(self.names) <= set(linears):
            raise DatabaseError(f"the database at {store.path} lists other linear layers than this model has; "
                                "use the database built for this model")
        self.modules = {name: linears[name] for name in self.names}  # a unit's levels are its layer's weights
        device = torch.device(device or next(adapter.model.parameters()).device)
        self.dense = {name: m.weight.data for name, m in self.modules.items()}
        self.variants: dict[str, list] = {}  # per unit its levels in the subclass's compact form
        for b in range(store.num_blocks):
            self._load_block(adapter, store, b, device)
        self.current: dict[str, int | None] = {name: None for name in self.names}
        self.device = device
        self.cache_bytes = cache_bytes  # None: decided at the first decode (see _default_cache)
        self._cache: OrderedDict[tuple[str, int], torch.Tensor] = OrderedDict()
        self._cached = 0

    def _load_block(self, adapter, store: VariantStore, block: int, device) -> None:
        """Put the block's levels into `self.variants`."""
        raise NotImplementedError

    def decode(self, name: str, level: int) -> torch.Tensor:
        """The unit's dense weight at `level`, in the model's dtype."""
        raise NotImplementedError

    def nbytes(self) -> int:
        """Bytes of the resident compact variants."""
        return sum(_nbytes(x) for levels in self.variants.values() for x in _tensors(levels))

    def weight(self, name: str, level: int | None) -> torch.Tensor:
        """The unit's weight at `level` (None = dense), decoded once and then served from the cache."""
        if level is None:
            return self.dense[name]
        key = (name, level)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        w = self.decode(name, level)
        if self.cache_bytes is None:
            self.cache_bytes = _default_cache(self.device)
        size = _nbytes(w)
        if size <= self.cache_bytes:
            while self._cached + size > self.cache_bytes:
                self._cached -= _nbytes(self._cache.popitem(last=False)[1])
            self._cache[key] = w
            self._cached += size
        return w

    def apply(self, genome) -> int:
        """Set every unit to its level in `genome` (None, or a None level: dense); returns how many changed."""
        genome = [None] * len(self.names) if genome is None else genome
        changed = 0
        for name, level in zip(self.names, genome):
            if self.current[name] != level:
                self.modules[name].weight.data = self.weight(name, level)
                self.current[name] = level
                changed += 1
        return changed

    def restore(self) -> None:
        self.apply(None)

    def bias(self, name: str, level: int | None):
        """The unit's bias at `level`: the layer's own (None if it has none); a bank whose levels
        change biases says how."""
        return self.modules[name].bias

    def block_step(self, block: int, hidden, kwargs: dict, genomes: list, reference) -> torch.Tensor:
        """Block `block` once on the whole stack with the reference's weights; in each linear layer
        the rows of candidates at another level are recomputed with their own weights, written in
        place (row slices: no gathers, no host synchronisation)."""
        rows = hidden.shape[0] // len(genomes)
        fixes = {}
        for u in self.units_of[block]:
            name = self.names[u]
            mine = [(slice(j * rows, (j + 1) * rows), self.weight(name, g[u]), self.bias(name, g[u]))
                    for j, g in enumerate(genomes) if g[u] != reference[u]]
            if mine:
                fixes[self.modules[name]] = mine
        return self.adapter.stacked_block(block, hidden, kwargs, len(genomes), _row_fixer(fixes))


class SparseBank(LevelBank):
    """Sparsity levels, each a packed keep-mask and the kept values, re-derived from the masks."""

    def __init__(self, adapter, store: VariantStore, device=None, cache_bytes: int | None = None):
        self.act_sq: dict[str, torch.Tensor] = {}
        super().__init__(adapter, store, device, cache_bytes)

    def _load_block(self, adapter, store: VariantStore, block: int, device) -> None:
        tensors = store.read_block(block, device)
        how = store.values(block)
        levels_of = {u["name"]: len(u["levels"]) for u in store.units if u["block"] == block}
        for group in adapter.linear_groups():
            lead = adapter.linear_name(block, group[0])
            factor = None
            if how["builder"] == "sparsegpt":
                factor = (unpack_upper(tensors[f"{lead}:factor"]), tensors[f"{lead}:act_sq"] == 0)
            for short in group:
                name = adapter.linear_name(block, short)
                dense = self.dense[name].to(device)
                keep = torch.stack([unpack(tensors[f"{name}:{i}:mask"], dense.numel()).view(dense.shape)
                                    for i in range(levels_of[name])])
                weights = levels_from_masks(how["builder"], dense, keep, factor, how["blocksize"])
                self.variants[name] = [encode(w.to(dense.dtype)) for w in weights]
                self.act_sq[name] = tensors[f"{name}:act_sq"]

    def decode(self, name: str, level: int) -> torch.Tensor:
        mask, values = self.variants[name][level]
        return decode(mask, values, self.dense[name].shape).to(self.dense[name].dtype)


def _row_fixer(fixes: dict):
    """`fix(module, x, out)` for `stacked_block`: recompute the rows of candidates with their own
    weights and biases, written straight into `out` (one matmul each, no temporary)."""
    def fix(module, x, out):
        for rows, weight, bias in fixes.get(module, ()):
            x_rows = x[rows].reshape(-1, x.shape[-1])
            out_rows = out[rows].view(-1, out.shape[-1])  # a view of out: raises rather than copy
            if bias is None:
                torch.mm(x_rows, weight.t(), out=out_rows)
            else:
                torch.addmm(bias, x_rows, weight.t(), out=out_rows)
        return out
    return fix


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def _tensors(x):
    """Every tensor in a compact form made of tuples, lists, dicts and objects with `__dict__`."""
    if isinstance(x, torch.Tensor):
        yield x
    elif isinstance(x, (tuple, list)):
        for y in x:
            yield from _tensors(y)
    elif isinstance(x, dict):
        for y in x.values():
            yield from _tensors(y)
    elif hasattr(x, "__dict__"):
        yield from _tensors(vars(x))


def _default_cache(device: torch.device) -> int:
    """An eighth of the GPU memory still free, 1 GiB on the host.

    Decoded levels are dense, the weights bound to the model are decoded levels too (evicting one
    that is bound frees nothing), and stacked candidates' activations still need room: at 8B a
    quarter of the free memory ran out.
    """
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free // 8
    return 1 << 30
