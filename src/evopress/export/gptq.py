"""Export format "gptq": integer bit-widths chosen per linear layer, in the GPTQ checkpoint layout.

The layout GPTQModel saves as `checkpoint_format: "gptq"` (v1) and loads per layer (ecosystem
§2.1b). One [rows, cols] layer at intN with groups of `g` columns (one group: per channel):

  qweight  int32 [cols·N/32, rows]   codes packed along the input dim, least-significant bits
                                     first; 3-bit codes run on across words (32 inputs fill 3
                                     words as 10|1|10|1|10 codes)
  qzeros   int32 [groups, rows·N/32] zero points packed along the output dim the same way,
                                     stored as zero - 1 (v1; see `v1_qzeros` for a zero of 0)
  scales   fp16  [groups, rows]
  g_idx    int32 [cols]              the group of each input column, i // g

so a runtime computes scale · (code - zero), the very codes and params of the level (they are
copied, never rounded again). `quantization_config` names the most common (bits, group, sym) as
the default and every other layer in `dynamic`, one exact-name regex per layer: `+:name$` with
its own bits, group_size and sym, or `-:name$` for a layer kept in bf16. Every tensor outside the
quantized layers (embeddings, norms, head, bf16 layers) is written in bf16, what the config
declares: GPTQModel's CPU kernels take fp16 or bf16 only, and bf16 keeps the source's range.

It carries int2, int3, int4 and int8 (GPTQModel lays int5-7 out in bit planes, another format)
and bf16; no FP4, FP8 or rotated levels. vLLM reads `dynamic` too, but serves only symmetric 4-
and 8-bit layers (its CPU build 4-bit alone) and runs q/k/v and gate/up as one layer each, so
those must share a level there. Stock transformers does not read `dynamic`: it builds every
layer at the default bits (docs/export.md).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import torch

import evopress
from evopress.compress.formats import Format
from evopress.compress.gptq import Quantized
from evopress.errors import ExportError
from evopress.export.directory import PLAN_FILE, staged, tensor_bytes
from evopress.export.shards import save_shards, untie

BITS = (2, 3, 4, 8)
DTYPE = torch.bfloat16  # of every tensor that is not quantized; what the config declares
# GPTQModel loads asymmetric v1 zero points only from a writer that encodes them as it has since
# 0.9.0 (`v1_qzeros`); it tells one by this entry in `meta.quantizer`, and refuses the rest.
V1_ZEROS_AS = "gptqmodel:0.9.0"


def block_length(bits: int) -> int:
    """Codes per run of whole words: 32 / gcd(32, bits) (3-bit: 32 codes in 3 words)."""
    return 32 // math.gcd(32, bits)


def check_format(fmt: Format, rows: int, cols: int, name: str) -> None:
    """Refuse a level the GPTQ layout cannot carry, saying what to use instead."""
    if fmt.rotation:
        raise ExportError(f"{name}: level {fmt.name} is rotated and GPTQ stores no rotation; "
                          "leave the +h levels out of the level set to export this format")
    if fmt.kind == "bf16":
        return
    if fmt.kind != "int" or fmt.bits not in BITS:
        raise ExportError(f"{name}: GPTQ carries int2, int3, int4, int8 and bf16, not {fmt.name}; "
                          "leave it out of the level set to export this format")
    if fmt.group and cols % fmt.group:
        raise ExportError(f"{name}: {cols} input columns are not a multiple of {fmt.name}'s group of "
                          f"{fmt.group}; choose a group size that divides them")
    n = block_length(fmt.bits)
    for what, size in (("input columns", cols), ("output rows", rows)):
        if size % n:
            raise ExportError(f"{name}: {size} {what} do not fill whole 32-bit words at {fmt.bits} bits "
                              f"(a multiple of {n} is needed); keep this layer in bf16")


def gptq_layer_bytes(fmt: Format, rows: int, cols: int) -> int:
    """Bytes of the tensors this layout writes for one [rows, cols] linear layer at `fmt`."""
    check_format(fmt, rows, cols, "a layer")
    if fmt.kind == "bf16":
        return 2 * rows * cols
    groups = cols // fmt.group if fmt.group else 1
    qweight, qzeros = rows * cols * fmt.bits // 8, groups * rows * fmt.bits // 8
    return qweight + qzeros + 2 * groups * rows + 4 * cols  # + scales + g_idx


def pack(values: torch.Tensor, bits: int) -> torch.Tensor:
    """Unsigned `bits`-wide fields along the last dim as 32-bit words (int64, 0 .. 2^32-1).

    Field i sits at bit i·bits of one little-endian bit stream, so a 3-bit field may start in one
    word and end in the next (GPTQModel's 10|1|10|1|10 pattern).
    """
    n = block_length(bits)
    fields = values.to(torch.int64).reshape(*values.shape[:-1], -1, n)
    words = torch.zeros(*fields.shape[:-1], n * bits // 32, dtype=torch.int64)
    for i in range(n):
        word, shift = divmod(i * bits, 32)
        words[..., word] |= (fields[..., i] << shift) & 0xFFFFFFFF
        if shift + bits > 32:  # the field's high bits start the next word
            words[..., word + 1] |= fields[..., i] >> (32 - shift)
    return words.flatten(-2)


def as_int32(words: torch.Tensor) -> torch.Tensor:
    """32-bit words held in int64 as the int32 with the same bits."""
    return (words - (words >> 31) * 2**32).to(torch.int32)


def v1_qzeros(zeros: torch.Tensor, bits: int) -> torch.Tensor:
    """v1 qzeros for zero points [groups, rows]: what GPTQModel writes, and reads back exactly.

    v1 stores zero - 1, and a loader adds the 1 back. GPTQModel does that for 2, 4 and 8 bits as
    one integer addition of the packed ones per word, and for 3 bits field by field, modulo 8. So
    a zero of 0 (asymmetric levels only) is written as the inverse of each: for 2/4/8 bits the
    packed ones are subtracted as an integer (the field above lends a one, and gets it back on
    loading), for 3 bits the field wraps to 7.
    """
    if bits == 3:
        return as_int32(pack((zeros.to(torch.int64) - 1) % 8, bits))
    return as_int32((pack(zeros, bits) - pack(torch.ones_like(zeros), bits)) % 2**32)


def gptq_tensors(level: Quantized) -> dict[str, torch.Tensor]:
    """qweight, qzeros, scales and g_idx of one quantized layer, from its codes and params."""
    fmt, codes = level.format, level.codes.cpu()
    rows, cols = codes.shape
    scale, zero = (level.params[k].cpu().reshape(rows, -1) for k in ("scale", "zero"))  # [rows, groups]
    group = fmt.group or cols
    return {"qweight": as_int32(pack(codes, fmt.bits)).T.contiguous(),
            "qzeros": v1_qzeros(zero.T, fmt.bits),
            "scales": scale.T.to(torch.float16).contiguous(),
            "g_idx": (torch.arange(cols) // group).to(torch.int32)}


def describe(fmt: Format) -> str:
    """A level's name with what the integer names leave out: "int4 g128 asym", "bf16"."""
    if fmt.kind != "int":
        return fmt.name
    return f"{fmt.name} {f'g{fmt.group}' if fmt.group else 'per-channel'} {'sym' if fmt.symmetric else 'asym'}"


def layer_config(fmt: Format) -> dict:
    return {"bits": fmt.bits, "group_size": fmt.group or -1, "sym": fmt.symmetric}


def quantization_config(levels: dict[str, Quantized]) -> dict:
    """GPTQModel's quantization_config: the most common layer setting and `dynamic` for the rest."""
    settings = {name: layer_config(lv.format) for name, lv in levels.items() if lv.format.kind == "int"}
    if not settings:
        raise ExportError("no layer is quantized; export the model with format 'hf' instead")
    counts = Counter(json.dumps(s, sort_keys=True) for s in settings.values())
    default = json.loads(counts.most_common(1)[0][0])
    dynamic = {}
    for name, level in levels.items():  # model order; each pattern matches its one module
        pattern = name.replace(".", r"\.") + "$"
        if level.format.kind == "bf16":
            dynamic[f"-:{pattern}"] = {}
        elif settings[name] != default:
            dynamic[f"+:{pattern}"] = settings[name]
    return {"quant_method": "gptq", "checkpoint_format": "gptq", **default, "desc_act": False,
            "pack_dtype": "int32", "lm_head": False, "dynamic": dynamic,
            "meta": {"quantizer": [f"evopress:{evopress.__version__}", V1_ZEROS_AS]}}


def checked_levels(adapter, levels: dict[str, Quantized], check_format) -> dict:
    """{full name: module} of the model's linear layers, once `levels` names each of them with a
    level of its shape that `check_format(fmt, rows, cols, name)` accepts (every exporter's check)."""
    linears = {adapter.linear_name(b, short): module for b in range(adapter.num_blocks)
               for short, module in adapter.linears(b).items()}
    unknown, missing = sorted(set(levels) - set(linears)), sorted(set(linears) - set(levels))
    if unknown or missing:
        raise ExportError(f"levels must name every linear layer of the model once (bf16 keeps one as it is); "
                          f"unknown: {unknown[:3]}, missing: {missing[:3]}")
    for name, level in levels.items():
        shape = tuple(linears[name].weight.shape)
        check_format(level.format, *shape, name)
        if level.codes is not None and tuple(level.codes.shape) != shape:
            raise ExportError(f"{name}: its level has codes of shape {tuple(level.codes.shape)} but the layer is "
                              f"{shape}; build the levels on this model")
    return linears


def export_gptq(adapter, levels: dict[str, Quantized], tokenizer, out_dir, overwrite: bool = False) -> dict:
    """Write `adapter`'s model with `levels` (full linear name -> level, every linear layer) to `out_dir`.

    Returns the path, the `quantization_config` written, `weight_bytes` (tensor bytes on disk)
    and `bytes_by_kind`: quantized layers ("int"), layers kept in bf16 and all other tensors.
    """
    checked_levels(adapter, levels, check_format)
    config = quantization_config(levels)

    state, by_kind = {}, Counter()
    for key, tensor in untie(adapter.dense_state_dict()).items():
        name = key.removesuffix(".weight")
        level = levels.get(name) if key.endswith(".weight") else None
        if level is not None and level.format.kind == "int":
            state.update({f"{name}.{k}": v for k, v in gptq_tensors(level).items()})
            by_kind["int"] += gptq_layer_bytes(level.format, *tensor.shape)
            continue
        state[key] = tensor.to(DTYPE) if tensor.is_floating_point() else tensor
        by_kind["bf16" if level is not None else "other"] += state[key].numel() * state[key].element_size()

    with staged(out_dir, overwrite) as scratch:
        save_shards(state, scratch)
        adapter.save_config(adapter.config_without_blocks(()), scratch)
        path = scratch / "config.json"
        written = {**json.loads(path.read_text()), "dtype": str(DTYPE).removeprefix("torch."),
                   "quantization_config": config}
        path.write_text(json.dumps(written, indent=2) + "\n")
        if tokenizer is not None:
            tokenizer.save_pretrained(scratch)
        record = {"evopress_version": evopress.__version__, "format": "gptq", "source_model": adapter.name_or_path,
                  "levels": {n: describe(lv.format) for n, lv in levels.items()}}
        (scratch / PLAN_FILE).write_text(json.dumps(record, indent=2) + "\n")
        weight_bytes = tensor_bytes(scratch)
    return {"path": Path(out_dir).expanduser().resolve(), "quantization_config": config,
            "weight_bytes": weight_bytes, "bytes_by_kind": dict(by_kind)}

