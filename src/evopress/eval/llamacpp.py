"""Held-out perplexity and KL to the dense model, computed by llama.cpp running the .gguf files.

The search scores GGUF levels in torch on their dequantized weights; llama.cpp also rounds the
activations in its quantized dot products, so the figures that count are the ones llama.cpp
computes on the files it will serve. Each window is evaluated from an empty context (no carried
state), every position's logits kept (`logits_all`), as `eval.metrics.perplexity` scores windows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from evopress.errors import EvopressError


def load(path: Path, n_ctx: int, threads: int = 2, **options):
    """A llama.cpp model of `path` that returns the logits of every position (`options`: more
    `Llama` settings, e.g. an f32 KV cache with type_k=type_v=GGML_TYPE_F32; the default cache
    is f16, as llama.cpp serves)."""
    try:
        from llama_cpp import Llama
    except ImportError:
        raise EvopressError("llama.cpp's Python bindings are not installed: pip install 'evopress[gguf]' "
                            "(compiles llama.cpp, about 15 minutes on 2 cores)") from None
    return Llama(model_path=str(path), n_ctx=n_ctx, n_batch=n_ctx, n_ubatch=n_ctx, logits_all=True,
                 n_threads=threads, verbose=False, **options)


def logits(llm, window) -> np.ndarray:
    """[len(window), vocab] next-token logits at each position of `window`, from an empty context."""
    llm.reset()
    llm.eval(list(map(int, window)))
    return np.array(llm.scores[:len(window)], dtype=np.float32)


def log_probs(llm, window) -> np.ndarray:
    """[len(window), vocab] log-softmax of the next-token logits (float64)."""
    logits_ = logits(llm, window).astype(np.float64)
    logits_ -= logits_.max(axis=1, keepdims=True)
    return logits_ - np.log(np.exp(logits_).sum(axis=1, keepdims=True))


def scores(path: Path, windows, dense: Path | None = None, threads: int = 2) -> dict:
    """{"ppl", "nll", "tokens"} of the file on `windows` (rows of token ids), and with `dense`
    (the unquantized file) also "kl": mean KL(dense ‖ this) per predicted token."""
    windows = [list(map(int, w)) for w in windows]
    n_ctx = max(map(len, windows))
    llm = load(path, n_ctx, threads)
    ref = load(dense, n_ctx, threads) if dense else None
    nll = kl = 0.0
    count = 0
    for w in windows:
        lp = log_probs(llm, w)[:-1]
        targets = np.asarray(w[1:])
        nll -= lp[np.arange(len(targets)), targets].sum()
        if ref is not None:
            p = log_probs(ref, w)[:-1]
            kl += (np.exp(p) * (p - lp)).sum()
        count += len(targets)
    for m in (llm, ref):
        if m is not None:
            m.close()
    out = {"nll": nll / count, "ppl": float(np.exp(nll / count)), "tokens": count}
    if ref is not None:
        out["kl"] = kl / count
    return out
