"""llm-compressor takes the sparsity recipe evopress exports and reproduces its per-layer profile.

`evopress sparsify` runs end to end on zoo:tiny (small settings) and exports `recipe.yaml` and
`evopress_sparsity.json`. llm-compressor's own `oneshot` then applies that recipe to the dense
model, in its own environment (`.ci/env/llmcompressor.sh`, through `llmc_oneshot.py`), and every
layer it pruned must have the sparsity the profile gives it, and no other layer may change. A
second run, with one entry of the recipe altered, shows that the comparison rejects a profile
that is not ours (and that llm-compressor follows the list entry by entry).

The tolerance is 1e-4, or one weight per 128-column block where that is more: llm-compressor
prunes int(s·n)+1 weights in each column block of n weights (it prunes every score `<=` the
one at sorted index int(s·n)), where evopress prunes exactly round(s·numel) per layer, so
its count can be one weight per block above ours. On zoo:tiny's k/v projections (8,192 weights,
one block) one weight is 1.2e-4.
"""

from __future__ import annotations

import json
import math
from contextlib import contextmanager

import pytest
import torch
import yaml
from transformers import AutoTokenizer

from evopress.api import run as sparsify
from evopress.config import BaselineConfig, DataConfig, RunConfig, SearchConfig
from evopress.data import load_tokens
from evopress.methods.sparsity import SparsityConfig
from evopress.zoo import tiny_model_dir

SEQ_LEN, TOKENS = 128, 4096  # 32 calibration sequences, for the database and for oneshot alike
LLMC_BLOCK = 128  # SparseGPTModifier's block_size default (the recipe leaves it at that)


def _config(tmp) -> RunConfig:
    # Small enough for 2 CPU cores; four generations already leave the uniform start.
    return RunConfig(method="sparsify", run_dir=str(tmp / "run"), device="cpu",
                     data=DataConfig(seq_len=SEQ_LEN, calibration_tokens=TOKENS, heldout_tokens=2048),
                     options=SparsityConfig(target=0.6, database=str(tmp / "db"), grid=(0.55, 0.65, 0.05),
                                            small_step=0.025),
                     search=SearchConfig(generations=4, offspring=6, stages=((1, 1024),), initial=0),
                     baselines=BaselineConfig(names=()))


@contextmanager
def _one_thread():
    """Torch on one thread, restored after. zoo:tiny's matrices gain nothing from a second one, and
    on a loaded 2-core machine two threads made this run 6-10x slower (about 16 s against 100-180 s)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _calibration_ids(d: DataConfig) -> list[list[int]]:
    """The run's own calibration sequences (what its session draws), for oneshot to calibrate on."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir())
    return load_tokens(d.calibration, tokenizer, "train", d.seq_len, d.calibration_tokens, d.seed).tolist()


@pytest.fixture(scope="module")
def export(tmp_path_factory, runtime):
    """The exported model directory of a sparsify run, and the calibration tokens as JSON."""
    llmc = runtime("llmcompressor")  # skip (or fail) before the run, not after it
    tmp = tmp_path_factory.mktemp("llmc")
    config = _config(tmp)
    with _one_thread():
        result = sparsify(config, log=lambda s: None)
    tokens = tmp / "tokens.json"
    tokens.write_text(json.dumps({"input_ids": _calibration_ids(config.data)}))
    return llmc, tmp, result.run_dir / "model", tokens


def _oneshot(llmc, recipe, tokens, out) -> dict:
    llmc.run("llmc_oneshot.py", tiny_model_dir(), recipe, tokens, out, timeout=600)
    return json.loads(out.read_text())


def _tolerance(shape: list[int]) -> float:
    rows, cols = shape
    return max(1e-4, math.ceil(cols / LLMC_BLOCK) / (rows * cols))


def mismatches(expected: dict[str, float], measured: dict) -> dict[str, tuple]:
    """Layers where llm-compressor's result is not the expected profile: (expected, measured) per
    layer, None where one side lacks the layer. Empty when the profiles agree."""
    got, shapes = measured["layers"], measured["shapes"]
    return {name: (expected.get(name), got.get(name)) for name in sorted(expected.keys() | got.keys())
            if name not in expected or name not in got or abs(got[name] - expected[name]) > _tolerance(shapes[name])}


@pytest.fixture(scope="module")
def applied(export):
    llmc, tmp, model_dir, tokens = export
    return _oneshot(llmc, model_dir / "recipe.yaml", tokens, tmp / "llmc.json")


def _profile(model_dir) -> dict[str, float]:
    return json.loads((model_dir / "evopress_sparsity.json").read_text())["layers"]


def test_llmcompressor_reproduces_the_exported_profile(export, applied):
    _, _, model_dir, _ = export
    profile = _profile(model_dir)
    # A uniform profile would pass even if the recipe paired sparsities with the wrong layers.
    assert len(set(profile.values())) > 1, profile
    worst = max(abs(applied["layers"][n] - s) for n, s in profile.items() if n in applied["layers"])
    print(f"llmcompressor {applied['llmcompressor']}: {len(applied['layers'])} layers pruned, "
          f"largest per-layer deviation {worst:.3g}, oneshot {applied['oneshot_seconds']:.1f}s")
    assert mismatches(profile, applied) == {}


def test_an_altered_recipe_is_rejected(export, applied):
    llmc, tmp, model_dir, tokens = export
    profile = _profile(model_dir)
    recipe = yaml.safe_load((model_dir / "recipe.yaml").read_text())
    args = recipe["sparsity_stage"]["sparsity_modifiers"]["SparseGPTModifier"]
    i = len(args["targets"]) // 2
    name = args["targets"][i]
    args["sparsity"][i] = round(args["sparsity"][i] + 0.1, 6)  # 0.1 is hundreds of weights on any layer
    altered_recipe = tmp / "altered.yaml"
    altered_recipe.write_text(yaml.safe_dump(recipe, sort_keys=False))
    altered = _oneshot(llmc, altered_recipe, tokens, tmp / "llmc-altered.json")
    assert list(mismatches(profile, altered)) == [name]  # the comparison catches it, and only it
    assert mismatches({**profile, name: args["sparsity"][i]}, altered) == {}  # llm-c followed the entry
