"""compress/ggml.py: GGUF levels are llama.cpp's own quantizer output, byte for byte.

The key fact for the GGUF search: `quantize(w, t)` equals the tensor `llama-quantize` writes for
`w` as type `t`, so every level the search scores is what llama.cpp will compute with. Tests that
need llama.cpp's compiled library skip without llama-cpp-python, except under
EVOPRESS_REQUIRE_RUNTIMES=1, where a missing runtime fails instead.
"""

from __future__ import annotations

import importlib
import os
from functools import lru_cache

import numpy as np
import pytest

from evopress.compress import ggml
from evopress.errors import ExportError, ModelLoadError, RecipeError
from evopress.zoo.shipped import SHIPPED_TINY

SIMPLE = ("q8_0", "q4_0", "q5_0", "mxfp4", "q4_1", "q5_1", "f16", "bf16")  # types gguf's numpy also quantizes
K_QUANTS = ("q2_k", "q3_k", "q4_k", "q5_k", "q6_k")


def _runtime(module: str):
    """Import a GGUF runtime package, or skip (fail under EVOPRESS_REQUIRE_RUNTIMES=1) naming the install."""
    try:
        return importlib.import_module(module)
    except Exception as e:  # a broken compiled build fails with OSError, not ImportError
        reason = f"{module} cannot be imported ({e}); pip install evopress[gguf]"
        if os.environ.get("EVOPRESS_REQUIRE_RUNTIMES") == "1":
            pytest.fail(reason)
        pytest.skip(reason)


@pytest.fixture
def gguf():
    return _runtime("gguf")


@pytest.fixture
def llama(gguf):
    """llama.cpp's library, loaded: the fixture for every test that calls its quantizer."""
    _runtime("llama_cpp")
    return ggml.library()


@lru_cache(maxsize=1)
def tiny_state() -> dict[str, np.ndarray]:
    """The shipped tiny model's weights as float32 arrays (real, trained weights)."""
    from safetensors.numpy import load_file

    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in load_file(SHIPPED_TINY / "model.safetensors").items()}


def real_weight() -> np.ndarray:
    """Every block's down_proj stacked: [1536, 512], a width every offered type fits."""
    state = tiny_state()
    return np.concatenate([state[f"model.layers.{i}.mlp.down_proj.weight"] for i in range(12)])


def random_weight(rows: int = 96, cols: int = 512, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((rows, cols)).astype(np.float32)


def relative_error(w: np.ndarray, t: str) -> float:
    values = ggml.dequantize(ggml.quantize(w, t), t, w.shape[1])
    return float(np.linalg.norm(values - w) / np.linalg.norm(w))


# ---------------------------------------------------------------------------------------------
# The table and its errors (no library)
# ---------------------------------------------------------------------------------------------

def test_type_names_parse_in_any_case_and_unknown_names_list_the_known():
    assert ggml.parse_type("Q4_K") == ggml.parse_type(" q4_k ") == "q4_k"
    assert ggml.parse_type("MXFP4") == "mxfp4"
    with pytest.raises(RecipeError, match="q4_k") as e:
        ggml.parse_type("iq2_xs")
    assert "'iq2_xs'" in str(e.value) and "q8_0" in str(e.value)


def test_table_is_ggufs_enum_and_block_sizes(gguf):
    from gguf.constants import GGML_QUANT_SIZES

    for name, t in ggml.TYPES.items():
        enum = gguf.GGMLQuantizationType[name.upper()]
        assert t.id == int(enum), name
        assert (t.block, t.block_bytes) == GGML_QUANT_SIZES[enum], name


def test_sizes_are_exact():
    assert ggml.row_bytes("Q4_K", 4096) == 16 * 144
    assert ggml.tensor_bytes("q8_0", 3, 64) == 3 * 2 * 34
    assert ggml.tensor_bytes("f32", 2, 5) == 40
    assert ggml.TYPES["q4_k"].bits == 4.5 and ggml.TYPES["q6_k"].bits == 6.5625 and ggml.TYPES["mxfp4"].bits == 4.25


def test_a_width_that_does_not_fit_the_blocks_names_tensor_width_and_block():
    with pytest.raises(RecipeError, match="blk.0.attn_q.weight") as e:
        ggml.check_shape("Q4_K", 128, 128, "blk.0.attn_q.weight")
    message = str(e.value)
    assert "128 values" in message and "q4_k" in message and "256" in message and "q5_0" in message
    with pytest.raises(RecipeError, match="blocks of 32"):
        ggml.tensor_bytes("q8_0", 4, 48)
    ggml.check_shape("q4_k", 128, 512, "blk.0.ffn_down.weight")


def test_bad_inputs_fail_before_reaching_ggml(llama):
    # ggml aborts the whole process on a bad width, so these must be caught in Python first
    with pytest.raises(RecipeError, match="layer.w"):
        ggml.quantize(random_weight(4, 96), "q4_k", name="layer.w")
    with pytest.raises(RecipeError, match="importance matrix has 10 values"):
        ggml.quantize(random_weight(4, 256), "q4_k", np.ones(10, np.float32))
    with pytest.raises(RecipeError, match="non-negative"):
        ggml.quantize(random_weight(4, 256), "q4_k", -np.ones(256, np.float32))
    with pytest.raises(RecipeError, match="matrix"):
        ggml.quantize(np.zeros(256, np.float32), "q8_0")
    bad = random_weight(4, 256)
    bad[1, 3] = np.nan
    with pytest.raises(ExportError, match="non-finite"):
        ggml.quantize(bad, "q8_0")
    with pytest.raises(RecipeError, match=r"uint8 \[rows, 288\]"):
        ggml.dequantize(np.zeros((2, 100), np.uint8), "q4_0", 512)


def test_a_missing_llama_cpp_names_the_install(monkeypatch):
    monkeypatch.setattr(ggml, "_LIB", None)
    monkeypatch.delenv("LLAMA_CPP_LIB_PATH", raising=False)
    monkeypatch.setattr(ggml.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ExportError, match=r"pip install evopress\[gguf\]"):
        ggml.quantize(random_weight(2, 32), "q8_0")


def test_a_type_this_build_lacks_names_the_upgrade(llama, monkeypatch):
    assert set(ggml._AVAILABLE) == set(ggml.TYPES)  # this build has every offered type
    monkeypatch.setattr(ggml, "_AVAILABLE", ggml._AVAILABLE - {"mxfp4"})
    with pytest.raises(ExportError, match="no ggml type mxfp4; upgrade llama-cpp-python"):
        ggml.quantize(random_weight(2, 32), "mxfp4")


# ---------------------------------------------------------------------------------------------
# llama.cpp's quantizer
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("t", SIMPLE)
def test_llama_cpp_equals_ggufs_numpy_quantizer_byte_for_byte(llama, gguf, t):
    """Two independent implementations agree: gguf's numpy port and the compiled C reference."""
    enum = gguf.GGMLQuantizationType[t.upper()]
    for w in (random_weight(256, 1024, seed=1), real_weight(), tiny_state()["model.embed_tokens.weight"]):
        ours = ggml.quantize(w, t)
        theirs = np.asarray(gguf.quants.quantize(w, enum)).view(np.uint8).reshape(ours.shape)
        assert np.array_equal(ours, theirs), f"{t}: {(ours != theirs).any(axis=1).sum()} rows differ"


@pytest.mark.parametrize("t", list(ggml.TYPES))
def test_every_type_has_its_size_and_both_decoders_agree_bit_for_bit(llama, t):
    w = real_weight()
    data = ggml.quantize(w, t)
    assert data.dtype == np.uint8 and data.shape == (w.shape[0], ggml.row_bytes(t, w.shape[1]))
    assert data.nbytes == ggml.tensor_bytes(t, *w.shape)
    values = ggml.dequantize(data, t, w.shape[1])
    assert values.dtype == np.float32 and values.shape == w.shape
    assert np.array_equal(values.view(np.uint32), ggml.ggml_dequantize(data, t, w.shape[1]).view(np.uint32))


def test_errors_on_real_weights_are_ordered_by_bits(llama):
    w = real_weight()
    errors = {t: relative_error(w, t) for t in ggml.TYPES}
    print({t: round(e, 5) for t, e in errors.items()})
    order = ("q2_k", "q3_k", "q4_k", "q5_k", "q6_k", "q8_0", "bf16", "f16")
    assert all(errors[a] > errors[b] for a, b in zip(order, order[1:])), errors
    assert errors["f32"] == 0.0
    assert errors["q4_0"] > errors["q4_1"] > errors["q5_0"] > errors["q5_1"] > errors["q6_k"]
    assert errors["q4_k"] < errors["q4_0"] and errors["mxfp4"] > errors["q4_0"]


def test_quantizing_decoded_values_again(llama):
    """The 32-blocks and float types are idempotent: quantizing a level's values gives its bytes.

    Their scale comes from the block's max (or min and max), which the rounded values keep. The
    k-quants are not: they fit 16 or 32 sub-block scales by an iterative search and then round
    those scales again against an fp16 super-scale, so the already-rounded values can lead to
    other scales (q3_k moves most rows, q6_k picks other codes for nearly the same values). They
    stay close, well inside their own error; nothing in evopress relies on re-quantizing."""
    w = real_weight()
    for t in ("f16", "bf16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "mxfp4"):
        data = ggml.quantize(w, t)
        assert np.array_equal(ggml.quantize(ggml.dequantize(data, t, w.shape[1]), t), data), t
    for t in K_QUANTS:
        values = ggml.dequantize(ggml.quantize(w, t), t, w.shape[1])
        moved = np.linalg.norm(ggml.dequantize(ggml.quantize(values, t), t, w.shape[1]) - values)
        assert moved / np.linalg.norm(values) < 0.5 * relative_error(w, t), t


def test_threads_give_the_same_bytes(llama):
    w = real_weight()
    imatrix = np.random.default_rng(3).uniform(0.1, 2.0, w.shape[1]).astype(np.float32)
    for t in ("q4_k", "q8_0"):
        assert np.array_equal(ggml.quantize(w, t, imatrix, threads=3), ggml.quantize(w, t, imatrix))


def test_an_importance_matrix_protects_heavy_columns(llama):
    """A few columns with large mean squared activation: with the imatrix the k-quants (and the
    32-blocks with an importance path) trade error elsewhere for less error there."""
    rng = np.random.default_rng(4)
    w = random_weight(64, 512, seed=5)
    imatrix = np.ones(512, np.float32)
    imatrix[rng.choice(512, 8, replace=False)] = 100.0

    def weighted_error(data, t):
        return float((imatrix * (ggml.dequantize(data, t, 512) - w) ** 2).sum())

    for t in K_QUANTS + ("q4_0", "q5_1"):
        plain, weighted = ggml.quantize(w, t), ggml.quantize(w, t, imatrix)
        assert not np.array_equal(plain, weighted), t
        assert weighted_error(weighted, t) < 0.7 * weighted_error(plain, t), t
    # as in llama.cpp, q8_0 and mxfp4 have no importance path
    for t in ("q8_0", "mxfp4"):
        assert np.array_equal(ggml.quantize(w, t), ggml.quantize(w, t, imatrix)), t


# ---------------------------------------------------------------------------------------------
# llama.cpp's own mixes
# ---------------------------------------------------------------------------------------------

_LAYER_NAMES = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
                "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
                "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}
_TOP_NAMES = {"lm_head.weight": "output.weight", "model.embed_tokens.weight": "token_embd.weight",
              "model.norm.weight": "output_norm.weight"}


def _gguf_name(key: str) -> str:
    if key in _TOP_NAMES:
        return _TOP_NAMES[key]
    parts = key.split(".")
    return f"blk.{parts[2]}.{_LAYER_NAMES['.'.join(parts[3:-1])]}.weight"


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A minimal llama-arch f32 GGUF of the tiny model: what llama.cpp's quantizer needs to load.

    Q/K rows are not rope-permuted and there is no tokenizer: nothing here runs the model, and
    quantization is per row, so the file only has to be loadable by llama-quantize."""
    gguf = _runtime("gguf")
    _runtime("llama_cpp")
    path = tmp_path_factory.mktemp("ggml") / "tiny-f32.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_context_length(256)
    writer.add_embedding_length(128)
    writer.add_block_count(12)
    writer.add_feed_forward_length(512)
    writer.add_head_count(4)
    writer.add_head_count_kv(2)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_dimension_count(32)
    writer.add_vocab_size(2048)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    for key, value in tiny_state().items():
        writer.add_tensor(_gguf_name(key), value)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _tensors(path) -> dict[str, np.ndarray]:
    import gguf

    return {t.name: np.array(t.data) for t in gguf.GGUFReader(str(path)).tensors}


def _use_more_bits(i: int, n: int) -> bool:
    """llama.cpp's llama-quant.cpp rule for which layers of a mix get more bits."""
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def _assert_same_bytes_as_ours(source, out, types):
    """Every tensor llama.cpp wrote equals our quantize of the f32 source as its type."""
    dense, written = _tensors(source), _tensors(out)
    assert set(written) == set(dense) == set(types)
    for name, data in written.items():
        t = types[name]
        ours = ggml.quantize(dense[name].reshape(-1, dense[name].shape[-1]), t)
        assert np.array_equal(ours.reshape(-1), data.view(np.uint8).reshape(-1)), f"{name} ({t})"


def test_llama_cpp_q4_k_m_follows_its_rules_and_writes_our_bytes(llama, source, tmp_path):
    out = tmp_path / "tiny-Q4_K_M.gguf"
    types = ggml.llama_mix(source, "q4_k_m", out)
    assert out.is_file() and not (tmp_path / "tiny-Q4_K_M.gguf.part").exists()
    # hidden 128 < 256: output.weight's q6_k falls back to q8_0 and q4_k to q5_0 there; only
    # ffn_down (width 512) keeps real k-quants: q6_k on the use_more_bits layers, q4_k elsewhere
    assert types["output.weight"] == "q8_0" and types["token_embd.weight"] == "q5_0"
    for i in range(12):
        more = _use_more_bits(i, 12)
        assert types[f"blk.{i}.ffn_down.weight"] == ("q6_k" if more else "q4_k"), i
        assert types[f"blk.{i}.attn_v.weight"] == ("q8_0" if more else "q5_0"), i
        assert types[f"blk.{i}.attn_q.weight"] == types[f"blk.{i}.ffn_up.weight"] == "q5_0"
        assert types[f"blk.{i}.attn_norm.weight"] == "f32"
    _assert_same_bytes_as_ours(source, out, types)


def test_llama_cpp_q2_k_mix_writes_our_bytes(llama, source, tmp_path):
    out = tmp_path / "tiny-Q2_K.gguf"
    types = ggml.llama_mix(source, "Q2_K", out, threads=1)
    assert {types[f"blk.{i}.ffn_down.weight"] for i in range(12)} == {"q3_k"}
    assert types["blk.0.attn_q.weight"] == "q4_0"  # q2_k does not fit width 128: llama.cpp's fallback
    _assert_same_bytes_as_ours(source, out, types)


def test_llama_mix_bad_inputs(tmp_path):
    with pytest.raises(RecipeError, match="Q4_K_M"):
        ggml.llama_mix(tmp_path / "x.gguf", "Q4_K_XL", tmp_path / "y.gguf")
    with pytest.raises(ModelLoadError, match="no GGUF file"):
        ggml.llama_mix(tmp_path / "missing.gguf", "Q4_K_M", tmp_path / "y.gguf")
