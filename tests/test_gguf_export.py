"""GGUF export: llama.cpp loads what `write_gguf` writes and computes what transformers computes.

On the `small` zoo model (hidden 256; trained once into the cache): an f32 file's logits match
transformers' on a held-out window, f16 and pre-quantized q8_0 files load and match (the q8_0 one
against transformers running the dequantized weights), llama.cpp tokenizes held-out text exactly
as the HF tokenizer does, and the file's size is its header plus its padded tensors, with a
header that does not depend on the tensor types. Random tiny models cover biases (Qwen2, Llama
with attention_bias) and tied embeddings.

Needs `gguf` and `llama_cpp` (llama-cpp-python, `.ci/env/llamacpp.sh`); without them the tests
skip, except under EVOPRESS_REQUIRE_RUNTIMES=1, where they fail.
"""

from __future__ import annotations

import ctypes
import importlib
import itertools
import os

import numpy as np
import pytest
import torch

from evopress.errors import ExportError, RecipeError

WINDOW = 128  # held-out tokens whose logits are compared
TOKENIZE_CHARS = 20_000  # held-out characters whose tokenization is compared


def _runtime(module: str):
    """Import `module`, or skip (fail under EVOPRESS_REQUIRE_RUNTIMES=1) saying how to get it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        message = (f"{module} is not importable ({e}); install it with pip install 'evopress[gguf]' "
                   "or build the environment with bash .ci/env/llamacpp.sh DIR")
        if os.environ.get("EVOPRESS_REQUIRE_RUNTIMES") == "1":
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="module")
def gguf():
    return _runtime("gguf")


@pytest.fixture(scope="module")
def llama_cpp():
    return _runtime("llama_cpp")


@pytest.fixture(scope="module")
def small(gguf, llama_cpp):
    """(model in fp32, tokenizer, adapter) of the `small` zoo model (trained into the cache on first
    use, minutes), only where both runtimes are: a tier without them never trains it."""
    from evopress.models import adapter_for, load_model
    from evopress.zoo.shipped import zoo_model_dir

    model, tokenizer = load_model(zoo_model_dir("small", progress=False), dtype="float32")
    return model.eval(), tokenizer, adapter_for(model)


@pytest.fixture(scope="module")
def window(small):
    """One held-out window of the zoo's corpus, as a list of token ids."""
    from evopress.data import load_tokens

    return load_tokens("builtin", small[1], "heldout", WINDOW, WINDOW, seed=0)[0].tolist()


@pytest.fixture(scope="module")
def f32_file(small, gguf, tmp_path_factory):
    from evopress.export.gguf import write_gguf

    path = tmp_path_factory.mktemp("gguf") / "small-f32.gguf"
    return path, write_gguf(small[2], small[1], path, dense_type="f32")


def _hf_logits(model, ids) -> np.ndarray:
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].float().numpy()


def _llama_logits(llama_cpp, path, ids) -> np.ndarray:
    """llama.cpp's logits for every position of `ids`, with an f32 KV cache (no f16 rounding there)."""
    from evopress.eval.llamacpp import load, logits

    f32 = llama_cpp.GGML_TYPE_F32
    llm = load(path, 256, type_k=f32, type_v=f32)
    try:
        return logits(llm, ids)
    finally:
        llm.close()


def _agreement(got: np.ndarray, want: np.ndarray) -> tuple[float, float]:
    """(max |logit difference|, share of positions with the same top-1 token)."""
    return float(np.abs(got - want).max()), float((got.argmax(-1) == want.argmax(-1)).mean())


def test_f32_file_computes_what_transformers_computes(small, window, f32_file, llama_cpp):
    diff, top1 = _agreement(_llama_logits(llama_cpp, f32_file[0], window), _hf_logits(small[0], window))
    print(f"f32 GGUF vs transformers fp32 on {len(window)} held-out tokens: max |dlogit| {diff:.2e}, top-1 {top1:.3f}")
    assert diff < 1e-4 and top1 == 1.0


def test_f16_file_loads_and_matches(small, window, gguf, llama_cpp, tmp_path):
    from evopress.export.gguf import write_gguf

    path = tmp_path / "small-f16.gguf"
    write_gguf(small[2], small[1], path, dense_type="f16")
    assert {t.tensor_type.name for t in gguf.GGUFReader(path).tensors} == {"F16", "F32"}
    diff, top1 = _agreement(_llama_logits(llama_cpp, path, window), _hf_logits(small[0], window))
    print(f"f16 GGUF vs transformers fp32: max |dlogit| {diff:.2e}, top-1 {top1:.3f}")
    assert diff < 0.05 and top1 >= 0.98


# q_proj and k_proj have their rows reordered for llama.cpp's rotary layout: quantized bytes too
Q8_KEYS = ("model.layers.0.self_attn.q_proj.weight", "model.layers.0.self_attn.k_proj.weight",
           "model.layers.3.mlp.down_proj.weight", "model.embed_tokens.weight")


def test_quantized_tensors_given_through_tensors(small, window, gguf, llama_cpp, tmp_path):
    from evopress.export.gguf import GGUFTensor, write_gguf
    from evopress.models import load_model
    from evopress.zoo.shipped import zoo_model_dir

    model, tokenizer, adapter = small
    q8 = gguf.GGMLQuantizationType.Q8_0
    state = adapter.dense_state_dict()
    blocks = {k: gguf.quants.quantize(state[k].float().numpy(), q8) for k in Q8_KEYS}
    path = tmp_path / "small-q8.gguf"
    info = write_gguf(adapter, tokenizer, path, tensors={k: GGUFTensor("q8_0", b) for k, b in blocks.items()})
    assert sum(t == "q8_0" for t in info["tensor_types"].values()) == len(Q8_KEYS)

    reference, _ = load_model(zoo_model_dir("small", progress=False), dtype="float32")
    weights = dict(reference.named_parameters())
    with torch.no_grad():
        for key, b in blocks.items():
            weights[key].copy_(torch.from_numpy(gguf.quants.dequantize(b, q8)))
    want = _hf_logits(reference.eval(), window)
    diff, top1 = _agreement(_llama_logits(llama_cpp, path, window), want)
    dense_diff, _ = _agreement(_hf_logits(model, window), want)
    print(f"q8_0 GGUF vs transformers with the dequantized weights: max |dlogit| {diff:.2e}, top-1 {top1:.3f} "
          f"(quantizing moved the transformers logits by up to {dense_diff:.2e})")
    # llama.cpp also rounds the activations to q8_0 for its q8_0 dot products
    assert diff < 0.1 and top1 >= 0.98


def _heldout_text(limit: int) -> str:
    from evopress.data import corpus_texts

    texts, total = [], 0
    for text in corpus_texts("heldout"):
        texts.append(text)
        total += len(text)
        if total >= limit:
            break
    return "\n".join(texts)


def _detokenize(llama_cpp, llm, ids) -> bytes:
    """llama.cpp's text for `ids`, piece by piece. Not `Llama.detokenize`: its 32-byte buffer
    drops longer pieces (this vocabulary has runs of indentation up to 37 bytes)."""
    out = b""
    for token in ids:
        buffer = ctypes.create_string_buffer(256)
        n = llama_cpp.llama_token_to_piece(llm._model.vocab, token, buffer, len(buffer), 0, False)
        assert 0 <= n <= len(buffer)
        out += buffer.raw[:n]
    return out


def test_llama_cpp_tokenizes_like_the_hf_tokenizer(small, f32_file, gguf, llama_cpp):
    tokenizer = small[1]
    text = _heldout_text(TOKENIZE_CHARS)
    llm = llama_cpp.Llama(model_path=str(f32_file[0]), vocab_only=True, verbose=False)
    try:
        ours = llm.tokenize(text.encode(), add_bos=False, special=False)
        theirs = tokenizer.encode(text, add_special_tokens=False)
        same = sum(a == b for a, b in zip(ours, theirs))
        print(f"tokenization of {len(text):,} held-out characters: {len(ours):,} tokens from llama.cpp, "
              f"{len(theirs):,} from HF, {same:,} equal at the same position")
        assert ours == theirs
        assert _detokenize(llama_cpp, llm, ours) == text.encode()
        # special tokens are CONTROL: parsed as one token only when asked to
        marked = tokenizer.bos_token + "x = 1" + tokenizer.eos_token
        assert llm.tokenize(marked.encode(), add_bos=False, special=True) == tokenizer.encode(marked)
        assert tokenizer.bos_token_id not in llm.tokenize(marked.encode(), add_bos=False, special=False)
    finally:
        llm.close()
    fields = gguf.GGUFReader(f32_file[0]).fields
    add_bos = bool(fields["tokenizer.ggml.add_bos_token"].contents())
    assert add_bos == (tokenizer.encode("a")[:1] == [tokenizer.bos_token_id])


def _tensor_offsets(gguf, path) -> dict[str, int]:
    return {t.name: int(t.data_offset) for t in gguf.GGUFReader(path).tensors}


def test_file_is_header_plus_padded_tensors_and_header_ignores_types(small, f32_file, gguf, tmp_path):
    from evopress.export.gguf import ALIGNMENT, GGUFTensor, data_bytes, file_size, header_size, padded, write_gguf

    _, tokenizer, adapter = small
    state = adapter.dense_state_dict()
    # a mix: bf16 matrices, two q8_0 ones and a q4_k one of arbitrary bytes (sizes only, never loaded)
    q8 = gguf.GGMLQuantizationType.Q8_0
    mixed = {k: GGUFTensor("q8_0", gguf.quants.quantize(state[k].float().numpy(), q8)) for k in Q8_KEYS[:2]}
    down = "model.layers.1.mlp.down_proj.weight"
    rows, cols = state[down].shape
    mixed[down] = GGUFTensor("q4_k", np.zeros((rows, data_bytes("q4_k", (rows, cols)) // rows), np.uint8))
    path = tmp_path / "small-mixed.gguf"
    info = write_gguf(adapter, tokenizer, path, tensors=mixed, dense_type="bf16")
    plain = f32_file[1]

    for written, file in ((plain, f32_file[0]), (info, path)):
        assert written["file_bytes"] == os.path.getsize(file) == written["header_bytes"] + sum(written["tensor_bytes"].values())
        # the reader's own offsets: each tensor starts where the padded ones before it end
        starts = list(itertools.accumulate(written["tensor_bytes"].values(), initial=written["header_bytes"]))
        assert list(_tensor_offsets(gguf, file).values()) == starts[:-1]
        assert all(n % ALIGNMENT == 0 for n in written["tensor_bytes"].values())
    assert plain["header_bytes"] == info["header_bytes"] == header_size(adapter, tokenizer)
    assert plain["tensor_bytes"] != info["tensor_bytes"]
    assert info["tensor_types"]["blk.1.ffn_down.weight"] == "q4_k"
    assert info["tensor_types"]["blk.0.attn_norm.weight"] == "f32"  # vectors stay f32
    types = {k: t.type for k, t in mixed.items()}
    assert file_size(adapter, tokenizer, types, dense_type="bf16") == info["file_bytes"]
    assert info["tensor_bytes"]["blk.1.ffn_down.weight"] == padded(rows * cols // 256 * 144)


def test_rope_row_order_interleaves_each_heads_halves():
    from evopress.export.gguf import rope_row_order

    assert rope_row_order(8, 2).tolist() == [0, 2, 1, 3, 4, 6, 5, 7]
    # llama.cpp's converter: reshape(heads, 2, d/2, ...).swapaxes(1, 2)
    w = torch.arange(24).reshape(12, 2)
    theirs = w.reshape(3, 2, 2, 2).swapaxes(1, 2).reshape(12, 2)
    assert torch.equal(w[torch.from_numpy(rope_row_order(12, 3))], theirs)


def _random_model(model_type: str, **config):
    """A random tiny model of `model_type` with the zoo tokenizer's vocabulary (init scaled up so
    the logits differ clearly between positions)."""
    import transformers

    classes = {"llama": ("LlamaConfig", "LlamaForCausalLM"), "qwen2": ("Qwen2Config", "Qwen2ForCausalLM")}
    config_class, model_class = (getattr(transformers, n) for n in classes[model_type])
    cfg = config_class(vocab_size=2048, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                       initializer_range=0.2, bos_token_id=0, eos_token_id=1, **config)
    torch.manual_seed(0)
    model = model_class(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.5)  # biases start at zero: give them values the test can see
    return model


@pytest.mark.parametrize("model_type,config", [
    ("llama", {"attention_bias": True, "mlp_bias": True, "tie_word_embeddings": True}),
    ("qwen2", {"tie_word_embeddings": False}),
], ids=["llama-biases-tied", "qwen2"])
def test_biases_and_tied_embeddings(model_type, config, small, window, gguf, llama_cpp, tmp_path):
    from evopress.export.gguf import write_gguf
    from evopress.models import adapter_for

    model = _random_model(model_type, **config)
    path = tmp_path / f"{model_type}.gguf"
    info = write_gguf(adapter_for(model), small[1], path)
    names = set(info["tensor_bytes"])
    assert ("output.weight" in names) != config["tie_word_embeddings"]
    assert "blk.0.attn_q.bias" in names and "blk.1.attn_k.bias" in names
    got, want = _llama_logits(llama_cpp, path, window), _hf_logits(model, window)
    diff, top1 = _agreement(got, want)
    print(f"{model_type} {config}: max |dlogit| {diff:.2e} (logit std {want.std():.2f}), top-1 {top1:.3f}")
    assert diff < 1e-4 and top1 == 1.0


def test_bad_inputs_are_refused_clearly(small, gguf, tmp_path):
    from evopress.export.gguf import GGUFTensor, data_bytes, write_gguf
    from evopress.models.gguf_names import gguf_name

    _, tokenizer, adapter = small
    key = "model.layers.0.self_attn.q_proj.weight"
    good = np.zeros((256, data_bytes("q8_0", (256, 256)) // 256), np.uint8)
    cases = {
        "no such tensor": {"model.layers.0.self_attn.q_norm.weight": GGUFTensor("q8_0", good)},
        "is not a matrix": {"model.layers.0.input_layernorm.weight": GGUFTensor("q8_0", good)},
        "must be uint8 of shape": {key: GGUFTensor("q8_0", good[:, :-1])},
    }
    for message, tensors in cases.items():
        with pytest.raises(ExportError, match=message):
            write_gguf(adapter, tokenizer, tmp_path / "bad.gguf", tensors=tensors)
    with pytest.raises(RecipeError, match="unknown GGUF tensor type 'q9_9'"):
        write_gguf(adapter, tokenizer, tmp_path / "bad.gguf", tensors={key: GGUFTensor("q9_9", good)})
    with pytest.raises(ExportError, match="blocks of 256"):
        data_bytes("q4_k", (128, 128))
    with pytest.raises(ExportError, match="dense_type"):
        write_gguf(adapter, tokenizer, tmp_path / "bad.gguf", dense_type="f8")
    with pytest.raises(ExportError, match="no place"):
        gguf_name("model.layers.0.self_attn.q_norm.weight")
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_non_gpt2_tokenizers_are_refused(small, gguf, tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from evopress.export.gguf import write_gguf

    bpe = Tokenizer(models.BPE(vocab={"a": 0, "b": 1}, merges=[]))
    bpe.pre_tokenizer = pre_tokenizers.Whitespace()
    with pytest.raises(ExportError, match="GPT-2-style byte-level BPE"):
        write_gguf(small[2], PreTrainedTokenizerFast(tokenizer_object=bpe), tmp_path / "bad.gguf")
