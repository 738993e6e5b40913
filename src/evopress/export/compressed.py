"""Export format "compressed-tensors": one quantization level per linear layer, as llm-compressor saves.

Every level is written by the `compressed-tensors` library's own compressor for its format
(ecosystem §2.1a), one config group per distinct scheme, its modules listed by exact name:

  level          group format            tensors of one [rows, cols] layer
  int2 .. int8   pack-quantized          weight_packed int32 [rows, ceil(cols·bits/32)] (codes packed
                                         densely, compressed-tensors >= 0.18), weight_scale fp16
                                         [rows, groups], weight_shape int64 [2]; asymmetric also
                                         weight_zero_point int32 [ceil(rows·bits/32), groups]
  mxfp4          mxfp4-pack-quantized    weight_packed uint8 [rows, cols/2], weight_scale uint8 (E8M0)
  nvfp4          nvfp4-pack-quantized    weight_packed uint8 [rows, cols/2], weight_scale fp8 E4M3
                                         [rows, cols/16], weight_global_scale fp32 [1]
  bf16           (in `ignore`)           weight bf16, as every tensor outside the quantized layers

The top-level format is the groups' one, or `mixed-precision` where they differ. FP8 and rotated
levels are refused before anything is written. The library quantizes the weight it is handed, so
it gets our dequantized values with our scales and rounds them back to our codes: integers
exactly (scale·(code - zero) is exact in fp32), FP4 within one fp32 rounding of an E2M1 value
(an NVFP4 group whose scale is 0 decodes to 0 whatever its codes). Each layer's codes are read
back with the library's own unpacking and checked against ours, and its bytes against
`ct_layer_bytes`, before anything is written: a library that re-rounds or re-packs fails loudly.

Stock `AutoModelForCausalLM.from_pretrained(dir)` loads the export (the config says bfloat16);
docs/export.md says which transformers versions and options load which mixes correctly.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import torch

import evopress
from evopress.compress.formats import Format, e2m1_decode
from evopress.compress.gptq import Quantized, dequantize
from evopress.errors import ExportError
from evopress.export.directory import PLAN_FILE, staged, tensor_bytes
from evopress.export.gptq import checked_levels, describe
from evopress.export.shards import save_shards, untie

LAYOUTS = {"int": "pack-quantized", "mxfp4": "mxfp4-pack-quantized", "nvfp4": "nvfp4-pack-quantized"}
PRESETS = {"mxfp4": "MXFP4A16", "nvfp4": "NVFP4A16"}  # the library's own schemes for the FP4 levels
DTYPE = torch.bfloat16  # of every tensor that is not quantized; what the config declares


def ct_layer_bytes(fmt: Format, rows: int, cols: int) -> int:
    """Bytes of the tensors this layout writes for one [rows, cols] layer at `fmt`."""
    check_format(fmt, rows, cols, "a layer")
    if fmt.kind == "bf16":
        return 2 * rows * cols
    if fmt.kind == "int":
        groups = cols // fmt.group if fmt.group else 1
        zeros = 0 if fmt.symmetric else 4 * math.ceil(rows * fmt.bits / 32) * groups
        return 4 * rows * math.ceil(cols * fmt.bits / 32) + 2 * rows * groups + 16 + zeros
    scale_bytes = rows * cols // fmt.group  # one byte per group: E8M0 or E4M3
    return rows * cols // 2 + scale_bytes + (4 if fmt.kind == "nvfp4" else 0)


def check_format(fmt: Format, rows: int, cols: int, name: str) -> None:
    """Refuse a level this layout cannot carry, saying what to use instead."""
    if fmt.rotation:
        raise ExportError(f"{name}: level {fmt.name} is rotated and compressed-tensors has no rotated weights; "
                          "leave the +h levels out of the level set to export this format")
    if fmt.kind not in (*LAYOUTS, "bf16"):
        raise ExportError(f"{name}: level {fmt.name} is not exported to compressed-tensors yet; "
                          "use int2..int8, mxfp4, nvfp4 or bf16 levels")
    if fmt.group and cols % fmt.group:
        raise ExportError(f"{name}: {cols} columns are not a multiple of {fmt.name}'s group of {fmt.group}")


def _require_library() -> None:
    try:
        import compressed_tensors  # noqa: F401
    except ImportError as e:
        raise ExportError("the compressed-tensors export needs the compressed-tensors library (>= 0.18): "
                          "pip install 'compressed-tensors>=0.18'") from e


def _scheme(fmt: Format, targets: list[str]):
    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme
    from compressed_tensors.quantization.quant_scheme import preset_name_to_scheme

    if fmt.kind in PRESETS:
        scheme = preset_name_to_scheme(PRESETS[fmt.kind], targets)
    else:
        strategy = {"strategy": "group", "group_size": fmt.group} if fmt.group else {"strategy": "channel"}
        scheme = QuantizationScheme(targets=targets, weights=QuantizationArgs(
            num_bits=fmt.bits, type="int", symmetric=fmt.symmetric, dynamic=False, **strategy))
    scheme.format = LAYOUTS[fmt.kind]
    return scheme


def _library_inputs(level: Quantized, weight: torch.Tensor) -> dict:
    """The layer as the library's compressors take it: the weight to quantize and its parameters."""
    fmt, p = level.format, level.params
    rows = level.codes.shape[0]
    state = {"weight": dequantize(level, weight)}
    if fmt.kind == "int":  # our codes and zeros are unsigned, the library's signed: shifted by 2^(bits-1)
        state["weight_scale"] = p["scale"].reshape(rows, -1)
        if not fmt.symmetric:
            state["weight_zero_point"] = (p["zero"].reshape(rows, -1).int() - 2 ** (fmt.bits - 1)).to(torch.int8)
    elif fmt.kind == "mxfp4":
        state["weight_scale"] = torch.exp2(p["exp"].float() - 127)
    else:
        state.update(weight_scale=p["block"].float(), weight_global_scale=p["global"].float().reshape(1))
    return state


def _check_written(name: str, level: Quantized, out: dict) -> None:
    """The library's tensors hold our codes (read back with its unpacking) in `ct_layer_bytes` bytes."""
    from compressed_tensors.compressors.nvfp4.helpers import unpack_fp4_from_uint8
    from compressed_tensors.compressors.pack_quantized.helpers import unpack_from_int32

    fmt, codes = level.format, level.codes
    rows, cols = codes.shape
    if fmt.kind == "int":
        shift = 2 ** (fmt.bits - 1)
        same = torch.equal(unpack_from_int32(out["weight_packed"], fmt.bits, (rows, cols)).int() + shift, codes.int())
        if not fmt.symmetric:
            zero = level.params["zero"].reshape(rows, -1)
            packed = unpack_from_int32(out["weight_zero_point"], fmt.bits, zero.shape, packed_dim=0)
            same &= torch.equal(packed.int() + shift, zero.int())
    else:  # FP4 codes compared as E2M1 values; a group whose scale is 0 decodes to 0 whatever they are
        values = unpack_fp4_from_uint8(out["weight_packed"], rows, cols, dtype=torch.float32)
        scale = level.params["block" if fmt.kind == "nvfp4" else "exp"].float()
        live = (scale != 0).repeat_interleave(fmt.group, dim=-1) if fmt.kind == "nvfp4" else slice(None)
        same = torch.equal(values[live], e2m1_decode(codes)[live])
    size = sum(t.numel() * t.element_size() for t in out.values())
    if not same or size != ct_layer_bytes(fmt, rows, cols):
        raise ExportError(f"{name}: the installed compressed-tensors wrote {fmt.name} differently from evopress's "
                          f"layout (codes equal: {same}, {size} bytes against {ct_layer_bytes(fmt, rows, cols)}); "
                          "use compressed-tensors >= 0.18 or report this")


def _on_cpu(level: Quantized) -> Quantized:
    return Quantized(level.format, level.codes.cpu(), {k: v.cpu() for k, v in level.params.items()})


def _head_name(model) -> str:
    head = model.get_output_embeddings()
    return next(name for name, module in model.named_modules() if module is head)


def export_compressed(adapter, levels: dict[str, Quantized], tokenizer, out_dir, overwrite: bool = False) -> dict:
    """Write `adapter`'s model with `levels` (full linear name -> level, every linear layer) to `out_dir`.

    Returns the path, the `quantization_config` written into config.json, `weight_bytes` (tensor
    bytes on disk), `bytes_by_kind` (quantized layers by level kind, bf16 layers, and "other":
    every other tensor) and `layer_bytes` (each linear layer's `ct_layer_bytes`).
    """
    linears = checked_levels(adapter, levels, check_format)
    _require_library()
    from compressed_tensors.compressors import BaseCompressor, ModelCompressor
    from compressed_tensors.quantization import QuantizationConfig

    by_format: dict[Format, list[str]] = {}
    for name, level in levels.items():
        if level.format.kind != "bf16":
            by_format.setdefault(level.format, []).append(name)
    groups = {f"group_{i}": _scheme(fmt, names) for i, (fmt, names) in enumerate(by_format.items())}
    layouts = {scheme.format for scheme in groups.values()}
    ignore = [name for name, level in levels.items() if level.format.kind == "bf16"] + [_head_name(adapter.model)]
    config = QuantizationConfig(config_groups=groups, ignore=ignore, quantization_status="compressed",
                                format=layouts.pop() if len(layouts) == 1 else "mixed-precision")
    scheme_of = {name: scheme for scheme in groups.values() for name in scheme.targets}

    state, by_kind = {}, Counter()
    for key, tensor in untie(adapter.dense_state_dict()).items():
        name = key.removesuffix(".weight")
        if name not in scheme_of:  # a bf16 layer, a bias or a tensor outside the linear layers
            state[key] = tensor.to(DTYPE) if tensor.is_floating_point() else tensor
            by_kind[levels[name].format.kind if name in levels else "other"] += state[key].numel() * state[key].element_size()
            continue
        level, scheme = _on_cpu(levels[name]), scheme_of[name]
        compressor = BaseCompressor.get_value_from_registry(scheme.format)
        out = compressor.compress(_library_inputs(level, tensor.detach().float().cpu()), scheme)
        _check_written(name, level, out)
        state.update({f"{name}.{k}": v.contiguous() for k, v in out.items()})
        by_kind[level.format.kind] += ct_layer_bytes(level.format, *tensor.shape)

    with staged(out_dir, overwrite) as scratch:
        save_shards(state, scratch)
        adapter.save_config(adapter.config_without_blocks(()), scratch)
        path = scratch / "config.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), "dtype": str(DTYPE).removeprefix("torch.")}))
        ModelCompressor(quantization_config=config).update_config(str(scratch))
        if tokenizer is not None:
            tokenizer.save_pretrained(scratch)
        record = {"evopress_version": evopress.__version__, "format": "compressed-tensors",
                  "source_model": adapter.name_or_path, "levels": {n: describe(lv.format) for n, lv in levels.items()}}
        (scratch / PLAN_FILE).write_text(json.dumps(record, indent=2) + "\n")
        written = json.loads(path.read_text())["quantization_config"]
        weight_bytes = tensor_bytes(scratch)
    return {"path": Path(out_dir).expanduser().resolve(), "quantization_config": written,
            "weight_bytes": weight_bytes, "bytes_by_kind": dict(by_kind),
            "layer_bytes": {n: ct_layer_bytes(lv.format, *linears[n].weight.shape) for n, lv in levels.items()}}
