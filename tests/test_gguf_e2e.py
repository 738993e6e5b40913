"""GGUF end to end at the file size of llama.cpp's Q4_K_M mix (tests/gguf_runs.py says what is
compared; test_gguf_e2e_q3.py does Q3_K_M), and what the run's parts must hold: the in-run
baseline is llama.cpp's own choice, llama.cpp computes what the search scored, the importance
matrix, errors. Runs where llama-cpp-python is installed (`.ci/env/llamacpp.sh`).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.gguf_runs import check_beats_llama_cpp, dense_file, search_at, small_model  # first: skips without llama.cpp

from evopress.api import run as search
from evopress.config import DataConfig, RunConfig, SearchConfig
from evopress.methods.gguf import GgufConfig

pytestmark = pytest.mark.slow
MIX = "Q4_K_M"


@pytest.fixture(scope="module")
def dense(tmp_path_factory):
    return dense_file(small_model(), tmp_path_factory.mktemp("dense"))


@pytest.fixture(scope="module")
def runs(dense, tmp_path_factory):
    return {MIX: search_at(MIX, small_model(), dense[0], tmp_path_factory.mktemp("gguf"))}


def test_searched_mix_beats_llama_cpp_at_its_file_size(runs, dense):
    check_beats_llama_cpp(MIX, *runs[MIX], dense)


def test_llama_cpp_plan_is_the_mix_llama_cpp_wrote(runs):
    """The in-run baseline reads the same types off llama.cpp's file, so the search competes with
    llama.cpp's real choice, tensor for tensor."""
    import gguf

    result, mix_file = runs["Q4_K_M"]
    plan = result.plans["llama.cpp Q4_K_M"]
    reader = gguf.GGUFReader(mix_file)
    written = {t.name: t.tensor_type.name.lower() for t in reader.tensors}
    from evopress.models.gguf_names import gguf_name

    assert {gguf_name(f"{k}.weight"): v for k, v in plan["levels"].items()} == \
        {k: v for k, v in written.items() if k.startswith("blk.") and not k.endswith("norm.weight")}


def test_widths_llama_cpp_cannot_quantize_are_refused_before_any_work(tmp_path):
    """The tiny model is 128 wide: k-quants (blocks of 256) fit only its down_proj."""
    from evopress.errors import RecipeError

    cfg = RunConfig(method="gguf", run_dir=str(tmp_path / "run"), device="cpu",
                    options=GgufConfig(database=str(tmp_path / "db")))
    with pytest.raises(RecipeError, match=r"q_proj.*128.*256"):
        search(cfg, log=lambda s: None)
    assert not (tmp_path / "db").exists()


def test_bad_settings_are_clear_errors(tmp_path):
    from evopress.errors import InfeasibleBudgetError, RecipeError

    with pytest.raises(RecipeError, match="q9_k"):
        search(RunConfig(method="gguf", run_dir=str(tmp_path / "a"), options=GgufConfig(levels=("q4_k", "q9_k"))))
    with pytest.raises(RecipeError, match="exports to gguf"):
        search(RunConfig(method="gguf", run_dir=str(tmp_path / "b"), export_format="hf"))
    with pytest.raises(InfeasibleBudgetError, match="--target 1.5 leaves"):
        search(RunConfig(method="gguf", model="zoo:small", run_dir=str(tmp_path / "c"), device="cpu",
                         data=DataConfig(calibration_tokens=4096, heldout_tokens=4096),
                         search=SearchConfig(stages=((1, 1024),), initial=2, initial_tokens=1024),
                         options=GgufConfig(target=1.5, database=str(tmp_path / "db"))), log=lambda s: None)


def test_llama_cpp_computes_what_the_search_scored(runs, dense):
    """The exported file's logits in llama.cpp against the searched model in memory (every layer
    at its level, the embedding and output at their fixed types), on held-out windows: within
    llama.cpp's own rounding (its dot products quantize the activations to q8_K)."""
    import numpy as np
    import torch

    from evopress.compress.ggml import dequantize, quantize
    from evopress.eval.llamacpp import load, logits
    from evopress.run import Run

    result, _ = runs["Q4_K_M"]
    r = Run(result.config, log=lambda s: None).open()
    r.prepare()
    r.bank.apply(tuple(result.plans["EvoPress"]["genome"]))
    model, opts = r.session.model, result.config.options
    for module, t in ((model.get_input_embeddings(), opts.embed_type), (model.lm_head, opts.output_type)):
        w = module.weight.data.float().numpy()
        module.weight.data = torch.from_numpy(dequantize(quantize(w, t), t, w.shape[1])).to(module.weight.dtype)
    llm = load(Path(result.export["path"]) / result.export["gguf"], 256)
    diffs, same = [], []
    for window in dense[1][:4]:
        with torch.no_grad():
            ours = model(torch.tensor([window])).logits[0].float().numpy()
        theirs = logits(llm, window)
        diffs.append(np.abs(ours - theirs))
        same.append(ours.argmax(-1) == theirs.argmax(-1))
    llm.close()
    diffs, same = np.concatenate(diffs), np.concatenate(same)
    print(f"llama.cpp vs in-memory searched model, {same.size} tokens: max |dlogit| {diffs.max():.3f}, "
          f"mean {diffs.mean():.4f}, same top-1 {same.mean():.4f}")
    assert diffs.mean() < 0.02 and diffs.max() < 0.5 and same.mean() > 0.97


def test_importance_matrix_lowers_the_weighted_error(runs, tmp_path):
    """--imatrix: llama.cpp's quantizers weigh each input column by its mean squared activation;
    on the calibration data that lowers the Hessian-weighted error of the low-bit levels."""
    import numpy as np

    from evopress.config import replace
    from evopress.database.store import VariantStore

    base = runs["Q4_K_M"][0].config
    cfg = replace(base, run_dir=str(tmp_path / "run"), options=replace(base.options, imatrix=True,
                                                                      database=str(tmp_path / "db")))
    search(cfg, log=lambda s: None, steps=("db",))
    plain, weighted = VariantStore.open(base.options.database), VariantStore.open(tmp_path / "db")
    levels = plain.units[0]["levels"]
    for t in ("q2_k", "q3_k", "q4_k"):
        i = levels.index(t)
        a = np.array([e[i] for e in plain.errors().values()])
        b = np.array([e[i] for e in weighted.errors().values()])
        print(f"{t}: Hessian-weighted relative error, mean over layers: plain {a.mean():.5f}, imatrix {b.mean():.5f}; "
              f"lower in {(b < a).sum()}/{len(a)} layers")
        assert b.mean() < a.mean() and (b < a).mean() > 0.8
