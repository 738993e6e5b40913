"""Write a Llama-family model as one llama.cpp GGUF file (architecture `llama`), with its tokenizer.

    info = write_gguf(adapter, tokenizer, "model.gguf", tensors={key: GGUFTensor("q4_k", data)})

Some tensors can come already quantized (`GGUFTensor`: a ggml type and its bytes, one row of
the HF weight per row of bytes); every other matrix is written as `dense_type` and every 1-D
tensor (norms, biases) as f32, as llama.cpp's own converter does.

The file's size is exact before it is written: a header (metadata, tokenizer, tensor infos,
padded to the alignment) whose size does not depend on the tensor types (an info holds the
type in a fixed-width field, and `general.file_type` is a fixed-width integer), plus each
tensor's data padded to the alignment. A search over per-tensor types can therefore price a
candidate as `header_size(...) + sum(padded(data_bytes(type, shape)))` and the written file
has exactly that size (`write_gguf` checks it on disk).

The tokenizer is written as GPT-2-style byte-level BPE (`tokenizer.ggml.model` "gpt2",
pre-tokenizer "gpt-2"): its vocabulary, merges and special tokens, so that llama.cpp splits text
with the same regex and merges as Hugging Face. llama.cpp's converter names the pre-tokenizer by
hashing the tokens of a probe text and refuses one it has not seen (any newly trained
tokenizer); naming GPT-2's rule directly is right for a byte-level BPE with GPT-2's regex, which
`_check_byte_level` verifies. docs/gguf.md has the measured agreement with transformers.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from evopress.compress.ggml import gguf_package, spec
from evopress.errors import ExportError
from evopress.export.shards import untie
from evopress.models.gguf_names import gguf_names, rope_heads

ARCH = "llama"
ALIGNMENT = 32  # GGUF's default; written as general.alignment
DENSE_TYPES = ("f32", "f16", "bf16")
PRE_TOKENIZER = "gpt-2"
PROBE = "a"  # text whose encoding with and without special tokens shows whether BOS/EOS are added


@dataclass(frozen=True)
class GGUFTensor:
    """One tensor already in a ggml type: `data` is uint8 [rows, row_bytes] in the HF row order.

    `type` is a ggml type name in lower case ("q4_k", "q8_0", "f16"). The writer reorders whole
    rows where llama.cpp's rotary layout needs it (queries and keys), which is exact because
    ggml quantizes each row on its own.
    """

    type: str
    data: np.ndarray


def padded(nbytes: int, alignment: int = ALIGNMENT) -> int:
    """`nbytes` rounded up to the alignment: what a tensor (or the header) takes in the file."""
    return -(-nbytes // alignment) * alignment


def _ggml_type(name: str):
    """The gguf.GGMLQuantizationType of a type name (`compress.ggml`'s table)."""
    return gguf_package().GGMLQuantizationType(spec(name).id)


def data_bytes(ggml_type: str, shape) -> int:
    """Data bytes (before padding) of a tensor of `shape` stored as `ggml_type` (`compress.ggml`'s
    table). ggml stores a matrix row by row in blocks along the last axis, so that axis must hold
    a whole number of blocks."""
    t = spec(ggml_type)
    *outer, width = (int(d) for d in shape)
    if width % t.block:
        raise ExportError(
            f"ggml type {ggml_type} stores rows in blocks of {t.block} values, but these rows are {width} "
            f"wide; use a type whose block divides {width} (f16, or q8_0/q4_0 where 32 divides it)"
        )
    return int(np.prod(outer, dtype=np.int64)) * (width // t.block) * t.block_bytes


# Model checks and hyperparameters.


def _check_geometry(geo) -> None:
    """Refuse what llama.cpp's `llama` architecture cannot express, before anything is written."""
    problems = []
    if geo.qk_norm:
        problems.append("RMSNorm on queries and keys (Qwen3)")
    if geo.sliding_window is not None:
        problems.append(f"sliding-window attention (window {geo.sliding_window})")
    if geo.hidden_act != "silu":
        problems.append(f"activation {geo.hidden_act!r} (llama uses silu)")
    rope_type = geo.rope_parameters.get("rope_type", "default")
    if rope_type != "default":
        problems.append(f"rope scaling {rope_type!r} (this writer handles plain rope only)")
    uniform = (geo.num_heads, geo.num_kv_heads, geo.intermediate_size)
    if any((b.num_heads, b.num_kv_heads, b.intermediate_size) != uniform for b in geo.blocks):
        problems.append("blocks of different head counts or MLP widths (a pruned model)")
    if problems:
        raise ExportError(f"this {geo.model_type} model cannot be written as a GGUF 'llama' file: "
                          + "; ".join(problems))


def _hyperparameters(writer, geo, num_blocks: int) -> None:
    writer.add_context_length(geo.max_position_embeddings)
    writer.add_embedding_length(geo.hidden_size)
    writer.add_block_count(num_blocks)
    writer.add_feed_forward_length(geo.intermediate_size)
    writer.add_head_count(geo.num_heads)
    writer.add_head_count_kv(geo.num_kv_heads)
    if geo.head_dim * geo.num_heads != geo.hidden_size:  # llama.cpp assumes hidden / heads otherwise
        writer.add_key_length(geo.head_dim)
        writer.add_value_length(geo.head_dim)
    writer.add_rope_dimension_count(geo.head_dim)
    writer.add_rope_freq_base(float(geo.rope_parameters.get("rope_theta", 10000.0)))
    writer.add_layer_norm_rms_eps(float(geo.rms_norm_eps))
    writer.add_vocab_size(geo.vocab_size)


# Tokenizer.


def _tokenizer_spec(tokenizer) -> dict:
    """The tokenizer.json of a fast (Rust `tokenizers`) HF tokenizer, as a dict."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ExportError(f"{type(tokenizer).__name__} is not a fast tokenizer; GGUF export reads the "
                          "vocabulary and merges of a `tokenizers` BPE (load it with use_fast=True)")
    return json.loads(backend.to_str())


def _byte_level_parts(pre: dict | None) -> list[dict]:
    if pre is None:
        return []
    return pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre]


def _check_byte_level(spec: dict) -> None:
    """GPT-2's pre-tokenizer rule is right only for a plain byte-level BPE with GPT-2's regex."""
    model, parts = spec.get("model") or {}, _byte_level_parts(spec.get("pre_tokenizer"))
    plain = (model.get("type") == "BPE" and not model.get("ignore_merges", False)
             and spec.get("normalizer") is None and len(parts) == 1
             and parts[0].get("type") == "ByteLevel" and parts[0].get("use_regex", True)
             and not parts[0].get("add_prefix_space", False))
    if not plain:
        raise ExportError(
            "GGUF export writes GPT-2-style byte-level BPE tokenizers only (model BPE using its merges "
            "for every word, no normalizer, pre-tokenizer ByteLevel with GPT-2's regex and no prefix "
            f"space); this one has model {model.get('type')!r} (ignore_merges "
            f"{model.get('ignore_merges', False)}), normalizer {spec.get('normalizer')!r} and "
            f"pre-tokenizer {spec.get('pre_tokenizer')!r}"
        )


def _merges(model: dict) -> list[str]:
    """Merges as llama.cpp reads them: "left right", split at the first space after position 0."""
    out = []
    for merge in model.get("merges", []):
        left, right = merge.split(" ", 1) if isinstance(merge, str) else merge
        if " " in left[1:] or " " in right:
            raise ExportError(f"BPE merge {merge!r} holds a space, which GGUF's 'a b' merge strings cannot carry")
        out.append(f"{left} {right}")
    return out


def _token_table(spec: dict, vocab_size: int) -> tuple[list[str], list[int]]:
    """Token text and llama.cpp token type for every id below `vocab_size` (the embedding's rows)."""
    gguf = gguf_package()
    text = {i: t for t, i in spec["model"]["vocab"].items()}
    special = {}
    for added in spec.get("added_tokens", []):
        text[added["id"]] = added["content"]
        special[added["id"]] = added.get("special", False)
    if text and max(text) >= vocab_size:
        raise ExportError(f"the tokenizer has token id {max(text)} but the model's embedding has only "
                          f"{vocab_size} rows; export with the tokenizer the model was trained with")
    tokens, types = [], []
    for i in range(vocab_size):
        if i not in text:  # embedding rows no token uses (vocabularies padded for speed)
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        else:
            tokens.append(text[i])
            types.append(gguf.TokenType.NORMAL if i not in special else
                         gguf.TokenType.CONTROL if special[i] else gguf.TokenType.USER_DEFINED)
    return tokens, [int(t) for t in types]


def _first_id(value):
    """A token id from a config value that may be a list (several EOS ids): the first one."""
    if isinstance(value, (list, tuple)):
        return value[0] if value else None
    return value


def _special_ids(tokenizer, geo) -> dict:
    """BOS/EOS/PAD/UNK ids and whether encoding adds BOS or EOS, as the HF tokenizer does."""
    ids = {
        "bos": _first_id(tokenizer.bos_token_id if tokenizer.bos_token_id is not None else geo.bos_token_id),
        "eos": _first_id(tokenizer.eos_token_id if tokenizer.eos_token_id is not None else geo.eos_token_id),
        "pad": _first_id(tokenizer.pad_token_id),
        "unk": _first_id(getattr(tokenizer, "unk_token_id", None)),
    }
    with_special = tokenizer.encode(PROBE, add_special_tokens=True)
    without = tokenizer.encode(PROBE, add_special_tokens=False)
    extra = len(with_special) > len(without)
    ids["add_bos"] = bool(extra and ids["bos"] is not None and with_special[0] == ids["bos"])
    ids["add_eos"] = bool(extra and ids["eos"] is not None and with_special[-1] == ids["eos"])
    return ids


def _tokenizer_metadata(writer, tokenizer, geo) -> None:
    spec = _tokenizer_spec(tokenizer)
    _check_byte_level(spec)
    tokens, types = _token_table(spec, geo.vocab_size)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(PRE_TOKENIZER)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(_merges(spec["model"]))
    ids = _special_ids(tokenizer, geo)
    for key, add in (("bos", writer.add_bos_token_id), ("eos", writer.add_eos_token_id),
                     ("pad", writer.add_pad_token_id), ("unk", writer.add_unk_token_id)):
        if ids[key] is not None:
            add(int(ids[key]))
    writer.add_add_bos_token(ids["add_bos"])
    writer.add_add_eos_token(ids["add_eos"])


# Tensors.


@dataclass(frozen=True)
class _Entry:
    """One tensor of the file: where it comes from, its GGUF name and type, its bytes' shape."""

    key: str  # HF state key
    name: str  # GGUF name
    type: str
    rope_heads: int | None  # reorder rows within heads of this count (queries, keys)
    byte_shape: tuple[int, ...]  # [rows, row_bytes] for a matrix, [bytes] for a vector

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.byte_shape, dtype=np.int64))


def _byte_shape(type_name: str, shape) -> tuple[int, ...]:
    nbytes = data_bytes(type_name, shape)
    return (nbytes,) if len(shape) == 1 else (int(shape[0]), nbytes // int(shape[0]))


def _check_types(types: dict, state: dict, names: dict) -> None:
    """Types may be chosen only for the matrices the file holds."""
    for key in types:
        if key not in names:
            why = ("the LM head is tied to the embedding and not written; give model.embed_tokens.weight"
                   if key in state else "the model has no such tensor")
            raise ExportError(f"a type is given for {key!r}, which is not in the GGUF file: {why}")
        if state[key].dim() != 2:
            raise ExportError(f"{key!r} is not a matrix; 1-D tensors are always written as f32")


def _entries(adapter, types: dict[str, str], dense_type: str) -> tuple[list[_Entry], dict, object]:
    """The file's tensors in order, the state dict they come from, and the model's geometry.

    A matrix gets its type from `types` (by HF key) or `dense_type`; a vector is always f32.
    """
    if dense_type not in DENSE_TYPES:
        raise ExportError(f"dense_type must be one of {', '.join(DENSE_TYPES)}, not {dense_type!r}")
    geo = adapter.geometry()
    _check_geometry(geo)
    state = adapter.dense_state_dict()
    names = gguf_names(untie(state), geo.tie_word_embeddings)
    _check_types(types, state, names)
    heads = {None: None, "heads": geo.num_heads, "kv_heads": geo.num_kv_heads}
    entries = []
    for key, gname in names.items():
        shape = tuple(state[key].shape)
        type_name = "f32" if len(shape) == 1 else types.get(key, dense_type)
        entries.append(_Entry(key, gname, type_name, heads[rope_heads(key)], _byte_shape(type_name, shape)))
    return entries, state, geo


def _check_data(tensors: dict, entries: list[_Entry]) -> None:
    """Each pre-quantized tensor must hold exactly the bytes its type implies for its matrix."""
    by_key = {e.key: e for e in entries}
    for key, given in tensors.items():
        data, expected = np.asarray(given.data), by_key[key].byte_shape
        if data.dtype != np.uint8 or data.shape != expected:
            raise ExportError(f"quantized {key!r} ({given.type}) must be uint8 of shape {expected} "
                              f"(rows, row bytes); got {data.dtype} of shape {data.shape}")


def rope_row_order(rows: int, heads: int) -> np.ndarray:
    """The row order llama.cpp's rotary layout needs: within each head, HF's halves interleaved.

    HF rotates row i of a head with row i + d/2 (d the head size); llama.cpp rotates rows 2i and
    2i+1. New row h*d + 2i + j is old row h*d + j*d/2 + i, the order llama.cpp's converter writes.
    """
    head_dim = rows // heads
    if head_dim * heads != rows or head_dim % 2:
        raise ExportError(f"{rows} rows do not split into {heads} heads of an even size")
    return np.arange(rows).reshape(heads, 2, head_dim // 2).transpose(0, 2, 1).reshape(-1)


def _dense_bytes(tensor, type_name: str) -> np.ndarray:
    """A torch tensor as uint8 rows of f32, f16 or bf16 values (a vector: one row per value)."""
    dtype = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}[type_name]
    t = tensor.detach().to("cpu", dtype).contiguous()
    raw = t.view(torch.int16) if dtype == torch.bfloat16 else t  # numpy has no bfloat16
    return raw.numpy().view(np.uint8).reshape(t.shape[0], -1)


def _tensor_data(entry: _Entry, state: dict, tensors: dict) -> np.ndarray:
    """The bytes of one tensor as the file holds them (rows reordered for queries and keys)."""
    rows = np.asarray(tensors[entry.key].data) if entry.key in tensors else _dense_bytes(state[entry.key], entry.type)
    if entry.rope_heads is not None:
        rows = rows[rope_row_order(rows.shape[0], entry.rope_heads)]
    return np.ascontiguousarray(rows).reshape(entry.byte_shape)


# The file.


def _file_type(entries: list[_Entry]):
    """general.file_type: llama.cpp's file type named after the ggml type holding most matrix bytes.

    Only informational (llama.cpp prints it); its field has a fixed width, so it never changes
    the header's size.
    """
    gguf = gguf_package()
    by_type: dict[str, int] = {}
    for e in entries:
        if len(e.byte_shape) == 2:
            by_type[e.type] = by_type.get(e.type, 0) + e.nbytes
    if not by_type:
        return gguf.LlamaFileType.ALL_F32
    dominant = max(sorted(by_type), key=by_type.get).upper()
    for candidate in (f"ALL_{dominant}", f"MOSTLY_{dominant}", f"MOSTLY_{dominant}_M"):
        if candidate in gguf.LlamaFileType.__members__:
            return gguf.LlamaFileType[candidate]
    return gguf.LlamaFileType.GUESSED


def _model_name(adapter, name: str | None) -> str:
    if name:
        return name
    source = adapter.name_or_path
    return Path(str(source)).name if source else "evopress"


def _writer(adapter, tokenizer, path, entries: list[_Entry], geo, name: str | None):
    """A GGUFWriter holding every key/value and tensor info of the file, nothing written yet."""
    gguf = gguf_package()
    writer = gguf.GGUFWriter(str(path), ARCH)
    writer.add_name(_model_name(adapter, name))
    writer.add_custom_alignment(ALIGNMENT)
    _hyperparameters(writer, geo, adapter.num_blocks)
    writer.add_file_type(int(_file_type(entries)))
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    _tokenizer_metadata(writer, tokenizer, geo)
    for e in entries:
        writer.add_tensor_info(e.name, e.byte_shape, np.dtype(np.uint8), e.nbytes, raw_dtype=_ggml_type(e.type))
    return writer


def _write_header(writer) -> int:
    """Write magic, key/values and tensor infos; returns the header's size padded to the alignment."""
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    return padded(writer.fout[0].tell())


def write_gguf(adapter, tokenizer, path, tensors: dict[str, GGUFTensor] | None = None,
               dense_type: str = "f32", name: str | None = None) -> dict:
    """Write `adapter`'s model and `tokenizer` as one GGUF file at `path` (atomically).

    `tensors` maps HF state keys to already-quantized matrices; other matrices are written as
    `dense_type` (f32, f16 or bf16), vectors as f32. Returns the file's sizes: `file_bytes`,
    `header_bytes` (everything before the first tensor's data), `tensor_bytes` (GGUF name ->
    bytes including alignment padding, so file = header + sum) and `tensor_types` (GGUF name ->
    ggml type).
    """
    tensors = dict(tensors or {})
    entries, state, geo = _entries(adapter, {k: t.type for k, t in tensors.items()}, dense_type)
    _check_data(tensors, entries)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_name(path.name + ".partial")  # a killed write leaves no half file at `path`
    writer = _writer(adapter, tokenizer, scratch, entries, geo, name)
    try:
        header = _write_header(writer)
        for e in entries:
            writer.write_tensor_data(_tensor_data(e, state, tensors))
        writer.close()
        os.replace(scratch, path)
    finally:
        writer.close()
        scratch.unlink(missing_ok=True)
    return _sizes(path, header, entries)


def _sizes(path: Path, header: int, entries: list[_Entry]) -> dict:
    sizes = {e.name: padded(e.nbytes) for e in entries}
    on_disk = os.path.getsize(path)
    if on_disk != header + sum(sizes.values()):  # the size a search priced must be the file's
        raise ExportError(f"{path} has {on_disk} bytes, not header {header} + tensors {sum(sizes.values())}; "
                          "the gguf package's layout has changed: report this with its version")
    return {"file_bytes": on_disk, "header_bytes": header, "tensor_bytes": sizes,
            "tensor_types": {e.name: e.type for e in entries}}


def header_size(adapter, tokenizer, name: str | None = None) -> int:
    """Bytes before the first tensor's data in `write_gguf`'s file (padded), for any tensor types.

    Writes only the header, to a temporary file: milliseconds. Pass the same `name` as to
    `write_gguf` (general.name is in the header).
    """
    entries, _, geo = _entries(adapter, {}, "f32")
    with tempfile.TemporaryDirectory(prefix="evopress-gguf-") as tmp:
        writer = _writer(adapter, tokenizer, Path(tmp) / "header.gguf", entries, geo, name)
        try:
            return _write_header(writer)
        finally:
            writer.close()


def gguf_tensors(adapter) -> dict[str, tuple[str, tuple[int, ...]]]:
    """HF state key -> (GGUF name, shape) of every tensor the file holds (a tied LM head is absent)."""
    entries, state, _ = _entries(adapter, {}, "f32")
    return {e.key: (e.name, tuple(state[e.key].shape)) for e in entries}


def file_size(adapter, tokenizer, types: dict[str, str] | None = None, dense_type: str = "f32",
              name: str | None = None) -> int:
    """The exact size of `write_gguf`'s file with `types` (HF key -> ggml type) for some matrices."""
    entries, _, _ = _entries(adapter, dict(types or {}), dense_type)
    return header_size(adapter, tokenizer, name) + sum(padded(e.nbytes) for e in entries)


__all__ = ["GGUFTensor", "write_gguf", "header_size", "file_size", "gguf_tensors", "padded",
           "data_bytes", "rope_row_order", "ALIGNMENT"]
