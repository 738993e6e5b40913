"""Replay a function of tensors from a CUDA graph captured once per shape.

GPTQ's column loop is hundreds of tiny kernels per column block (`compress.gptq`): on a GPU the
time goes to launching them, not to the arithmetic. Captured once as a graph, a block of 128
columns is one launch. Every layer of one kind has the same shapes, so one capture serves the
whole model. The graph runs the very kernels the eager call runs, so the results are the same
bits; off CUDA the function is simply called.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable

import torch
from torch.utils._pytree import tree_flatten, tree_map, tree_unflatten

KEEP = 8  # graphs kept (each holds its inputs, outputs and scratch memory)
_graphs: OrderedDict = OrderedDict()


def replay(key, fn: Callable, *args):
    """fn(*args), through a graph captured for `key` plus the args' shapes and dtypes. `fn` must
    not synchronise with the host (no .item(), no data-dependent shapes); `key` names everything
    else it depends on. The outputs are fresh tensors, not the graph's own buffers."""
    leaves, spec = tree_flatten(args)
    tensors = [x for x in leaves if isinstance(x, torch.Tensor)]
    if not tensors or not tensors[0].is_cuda:
        return fn(*args)
    key = (key, str(spec), tuple((x.shape, x.dtype, x.device) if isinstance(x, torch.Tensor) else x for x in leaves))
    entry = _graphs.get(key)
    if entry is None:
        return _capture(key, fn, leaves, spec)
    _graphs.move_to_end(key)
    inputs, outputs, graph = entry
    for mine, x in zip(inputs, leaves):
        if isinstance(x, torch.Tensor):
            mine.copy_(x)
    graph.replay()
    return tree_map(torch.clone, outputs)


def _capture(key, fn: Callable, leaves: list, spec):
    inputs = [x.clone() if isinstance(x, torch.Tensor) else x for x in leaves]
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):  # warm up off the capture (lazy inits, cached constants)
        result = fn(*tree_unflatten(inputs, spec))
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        outputs = fn(*tree_unflatten(inputs, spec))
    _graphs[key] = (inputs, outputs, graph)
    while len(_graphs) > KEEP:
        _graphs.popitem(last=False)
    return result


def clear() -> None:
    """Free every captured graph."""
    _graphs.clear()
