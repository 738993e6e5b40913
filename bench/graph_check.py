"""GPTQ's column sweep through CUDA graphs against the eager sweep: equal bits, and the time of each.

    python bench/graph_check.py [--rows 1536] [--cols 512]
"""

import argparse
import json
import time

import torch

from evopress.compress import cudagraph
from evopress.compress.formats import parse_format
from evopress.compress.gptq import gptq_levels

LEVELS = ("int2", "int3", "int4", "int5", "int6", "int8", "mxfp4", "nvfp4", "bf16")


def timed(fn):
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = fn()
    torch.cuda.synchronize()
    return out, time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rows", type=int, default=1536)
    p.add_argument("--cols", type=int, default=512)
    a = p.parse_args()
    g = torch.Generator(device="cuda").manual_seed(0)
    w = torch.randn(a.rows, a.cols, device="cuda", generator=g)
    x = torch.randn(4096, a.cols, device="cuda", generator=g) @ (torch.eye(a.cols, device="cuda") +
                                                                   0.1 * torch.randn(a.cols, a.cols, device="cuda", generator=g))
    h = 2 * x.T @ x / x.shape[0]
    fmts = [parse_format(n) for n in LEVELS]
    for act_order in (False, True):
        real = cudagraph.replay
        import evopress.compress.gptq as gptq
        gptq.replay = lambda key, fn, *args: fn(*args)  # eager
        eager, t_eager = timed(lambda: gptq_levels(w, h, fmts, act_order=act_order))
        gptq.replay = real
        cudagraph.clear()
        first, t_first = timed(lambda: gptq_levels(w, h, fmts, act_order=act_order))
        graphed, t_graph = timed(lambda: gptq_levels(w, h, fmts, act_order=act_order))
        same = all((e.codes is None and c.codes is None) or (torch.equal(e.codes, c.codes) and torch.equal(e.codes, f.codes)
                   and all(torch.equal(e.params[k], c.params[k]) for k in e.params)) for e, f, c in zip(eager, first, graphed))
        print(json.dumps({"act_order": act_order, "shape": [a.rows, a.cols], "eager s": round(t_eager, 3),
                          "first (capture) s": round(t_first, 3), "replayed s": round(t_graph, 3),
                          "speedup": round(t_eager / t_graph, 2), "bit-identical": same}), flush=True)


if __name__ == "__main__":
    main()
