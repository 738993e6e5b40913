"""Build a sparsity variant store layer by layer, resumably (EvoPress §3.1, arXiv 2410.14649).

Calibration activations flow through the model one decoder block at a time (`models.sequential`):
for each block, one forward pass collects the Hessian of every input group of its linear layers
(the reference runs each block twice; the weights do not change, so once is enough) and also
produces the next block's inputs. Propagation is dense, as in the reference, so a layer's
variants do not depend on the levels chosen elsewhere. Every level of a layer comes from that one
Hessian (`compress.sparsegpt`). The store keeps each level's mask, and for SparseGPT each input
group's inverse-Hessian factor, from which loading re-derives the exact weights
(`database.bank`). A finished block is written at once; a rerun skips finished blocks,
replaying only their (deterministic) forward passes, so a killed build resumes with identical
bytes.
"""

from __future__ import annotations

import time
from typing import Callable

import torch

from evopress.compress.sparsegpt import inverse_factor, prune_levels, relative_errors, sweep
from evopress.compress.sparsity import Matrix
from evopress.database.codec import pack, pack_upper
from evopress.database.store import VariantStore
from evopress.models.sequential import first_block_inputs, on_device, run_block
from evopress.progress import bar


def matrices(adapter) -> list[Matrix]:
    """Every prunable linear layer of the model, block by block, in the adapter's order."""
    return [Matrix(adapter.linear_name(b, name), b, tuple(module.weight.shape))
            for b in range(adapter.num_blocks) for name, module in adapter.linears(b).items()]


def _hessians(adapter, block: int, acts, device, offload):
    """One forward of the block: per input group its Hessian (2/N) Σ xxᵀ (fp32), and the outputs."""
    modules = adapter.linears(block)
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    handles = []
    for group in adapter.linear_groups():
        lead = group[0]

        def hook(module, args, lead=lead):
            x = args[0].reshape(-1, args[0].shape[-1])
            if lead not in sums:
                sums[lead] = torch.zeros(x.shape[1], x.shape[1], device=x.device)
                counts[lead] = 0
            _accumulate(sums[lead], x)
            counts[lead] += x.shape[0]

        handles.append(modules[lead].register_forward_pre_hook(hook))
    try:
        out = run_block(adapter.blocks()[block], acts, device, offload)
    finally:
        for h in handles:
            h.remove()
    hessians = {name: sums[group[0]] * (2.0 / counts[group[0]])
                for group in adapter.linear_groups() for name in group}
    return hessians, out


def _accumulate(total: torch.Tensor, x: torch.Tensor) -> None:
    """total += xᵀx in fp32. bf16 and fp16 values are exact in TF32, so on a GPU their product runs
    on TF32 tensor cores (several times the fp32 rate; at the 8B shape the down_proj Hessian
    dominates the build) with fp32 accumulation: nothing is rounded that fp32 would keep."""
    exact = x.is_cuda and x.dtype in (torch.bfloat16, torch.float16)
    x = x.float()
    if not exact:
        total.addmm_(x.T, x)
        return
    matmul = torch.backends.cuda.matmul
    before, matmul.fp32_precision = matmul.fp32_precision, "tf32"
    try:
        total.addmm_(x.T, x)
    finally:
        matmul.fp32_precision = before


def build_store(adapter, tokens: torch.Tensor, store: VariantStore, block_levels: Callable, label: str, device,
                batch_size: int = 8, log: Callable[[str], None] = print,
                propagate: Callable | None = None) -> VariantStore:
    """Fill `store` block by block with `block_levels(adapter, block, hessians)` -> (tensors, errors,
    values); returns it complete. The loop every database shares: dense propagation, one Hessian
    per input group, a finished block written at once, finished blocks only replayed.
    `propagate(adapter, block, tensors)` -> {layer: weight}: the next block's inputs come from the
    block with those weights instead (the reference's quantized propagation), from the stored
    tensors, so a resumed build replays exactly what the first one computed."""
    if store.complete:
        return store
    offload = next(adapter.model.parameters()).device
    todo = sum(not store.done(b) for b in range(adapter.num_blocks))
    log(f"database: {label}, {len(store.units)} linear layers in {adapter.num_blocks} blocks "
        f"({todo} to build), {tokens.numel():,} calibration tokens, on {device}")
    acts = first_block_inputs(adapter, tokens, batch_size, device, offload)
    t0 = time.perf_counter()
    for b in bar(range(adapter.num_blocks), "database", unit="block"):
        with on_device(adapter.blocks()[b], device):
            if store.done(b):
                acts = _outputs(adapter, b, acts, device, offload, propagate and store.read_block(b, device), propagate)
                continue
            t_block = time.perf_counter()
            hessians, out = _hessians(adapter, b, acts, device, offload)
            tensors, errors, values = block_levels(adapter, b, hessians)
            store.write_block(b, tensors, errors, values)
            acts = out if propagate is None else _outputs(adapter, b, acts, device, offload, tensors, propagate)
        log(f"database: block {b + 1}/{adapter.num_blocks} in {time.perf_counter() - t_block:.1f}s "
            f"({store.nbytes() / 2**20:.1f} MiB so far, {time.perf_counter() - t0:.0f}s total)")
    return store


def _outputs(adapter, block: int, acts, device, offload, tensors, propagate):
    """The block's outputs: dense, or with its layers' weights swapped for `propagate`'s for the pass."""
    if propagate is None:
        return run_block(adapter.blocks()[block], acts, device, offload)
    modules = adapter.linears(block)
    weights = propagate(adapter, block, tensors)
    dense = {name: modules[name].weight.data for name in weights}
    try:
        for name, w in weights.items():
            modules[name].weight.data = w.to(device=dense[name].device, dtype=dense[name].dtype)
        return run_block(adapter.blocks()[block], acts, device, offload)
    finally:
        for name, w in dense.items():
            modules[name].weight.data = w


def build_sparsity_store(adapter, tokens: torch.Tensor, store: VariantStore, method: str, device,
                         batch_size: int = 8, blocksize: int = 128, damp: float = 0.01,
                         log: Callable[[str], None] = print) -> VariantStore:
    """Fill `store` with every sparsity level of every linear layer; returns it complete."""
    table = {u["name"]: u for u in store.units}

    def block_levels(adapter, block, hessians):
        tensors, errors = _block_levels(adapter, block, hessians, table, method, blocksize, damp)
        return tensors, errors, {"builder": method, "blocksize": blocksize}
    return build_store(adapter, tokens, store, block_levels, method, device, batch_size, log)


def _block_levels(adapter, block: int, hessians, table, method: str, blocksize: int, damp: float):
    """Masks of every level of the block's layers (+ SparseGPT factors), and their relative errors."""
    tensors, errors = {}, {}
    modules = adapter.linears(block)
    for group in adapter.linear_groups():
        factor = inverse_factor(hessians[group[0]], damp) if method == "sparsegpt" else None
        if factor is not None:
            tensors[f"{adapter.linear_name(block, group[0])}:factor"] = pack_upper(factor[0])
        for name in group:
            weight, unit = modules[name].weight, table[adapter.linear_name(block, name)]
            if factor is not None:
                levels = sweep(weight, *factor, blocksize, pruned=unit["pruned"])
            else:
                levels = prune_levels(method, weight, hessians[name], unit["pruned"])
            errors[unit["name"]] = relative_errors(weight, levels, hessians[name])
            tensors[f"{unit['name']}:act_sq"] = torch.diagonal(hessians[name]).float() / 2
            for i, level in enumerate(levels):
                tensors[f"{unit['name']}:{i}:mask"] = pack(level != 0)
    return tensors, errors
