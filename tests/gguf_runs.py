"""The GGUF end-to-end runs on the `small` zoo model (hidden 256: every k-quant fits every layer),
one llama.cpp mix per test file (test_gguf_e2e.py, test_gguf_e2e_q3.py), so that two pytest
workers search at once.

llama.cpp's own mix is written by llama.cpp's quantizer from our f32 file; at its file size (token
embedding and output at the mix's own types), the searched mix must have lower KL to the dense
model and lower held-out perplexity, both computed by llama.cpp running the files.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Imported first by each of those files: without llama-cpp-python this skips the importing file
# (unless CI, which installs it, says it must be there).
if os.environ.get("EVOPRESS_REQUIRE_RUNTIMES") != "1":
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (pip install 'evopress[gguf]', "
                        "or bash .ci/env/llamacpp.sh DIR)")

from evopress.config import BaselineConfig, DataConfig, RunConfig, SearchConfig  # noqa: E402
from evopress.methods.gguf import GgufConfig  # noqa: E402


def small_model() -> Path:
    from evopress.zoo.shipped import zoo_model_dir

    return zoo_model_dir("small")


def dense_file(small: Path, root: Path) -> tuple[Path, list]:
    """Our f32 file of the model, and the held-out windows llama.cpp scores."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from evopress.data.tokens import load_tokens
    from evopress.export.gguf import write_gguf
    from evopress.models import adapter_for

    model = AutoModelForCausalLM.from_pretrained(small, dtype="float32")
    tokenizer = AutoTokenizer.from_pretrained(small)
    path = root / "model-f32.gguf"
    write_gguf(adapter_for(model), tokenizer, path, dense_type="f32")
    return path, load_tokens("builtin", tokenizer, "heldout", 256, 8192).tolist()


def search_at(mix: str, small: Path, dense: Path, root: Path):
    """The search at the file size of llama.cpp's `mix`: (its result, llama.cpp's file)."""
    from evopress.api import run
    from evopress.compress.ggml import llama_mix

    mix_file = root / f"llama-{mix}.gguf"
    types = llama_mix(dense, mix, mix_file)
    cfg = RunConfig(method="gguf", model=str(small), run_dir=str(root / mix), device="cpu",
                    budget=str(mix_file.stat().st_size),
                    data=DataConfig(seq_len=256, calibration_tokens=32_768, heldout_tokens=16_384),
                    options=GgufConfig(database=str(root / "db"), mixes=(mix,),
                                       embed_type=types["token_embd.weight"], output_type=types["output.weight"]),
                    search=SearchConfig(generations=24, offspring=12, stages=((2, 2048), (1, 8192)), initial=16),
                    baselines=BaselineConfig(names=("llama.cpp", "dp"), random_samples=16))
    return run(cfg, log=print), mix_file


def check_beats_llama_cpp(mix: str, result, mix_file: Path, dense: tuple[Path, list]) -> None:
    """llama.cpp runs both files: ours must be no larger, with lower KL to dense and lower perplexity."""
    from evopress.eval.llamacpp import scores

    print(result.summary)
    ours = Path(result.export["path"]) / result.export["gguf"]
    assert os.path.getsize(ours) == result.export["file_bytes"] <= mix_file.stat().st_size
    theirs, mine = scores(mix_file, dense[1], dense=dense[0]), scores(ours, dense[1], dense=dense[0])
    dense_ppl = scores(dense[0], dense[1])["ppl"]
    print(f"{mix}: llama.cpp {mix_file.stat().st_size:,} B  KL {theirs['kl']:.5f}  ppl {theirs['ppl']:.3f} | "
          f"EvoPress {os.path.getsize(ours):,} B  KL {mine['kl']:.5f}  ppl {mine['ppl']:.3f} | "
          f"dense (f32) ppl {dense_ppl:.3f}, {mine['tokens']} tokens")
    assert mine["kl"] < theirs["kl"]
    assert mine["ppl"] < theirs["ppl"]
