"""evopress.export.compressed: the layout's sizes, the refusals, and what the library writes.

The sizes and refusals need no compressed-tensors. The rest runs where it is importable (the
`ctensors` environment, .ci/env/ctensors.sh) and reads the written files back with the library's
own unpacking and decompressors. Loading in transformers is tests/integration/test_compressed.py.
"""

from __future__ import annotations

import json
import sys

import pytest
import torch
from safetensors.torch import load_file

from evopress.compress.formats import e2m1_decode, parse_format
from evopress.compress.gptq import Quantized, dequantize, rtn_levels
from evopress.errors import ExportError
from evopress.export.compressed import ct_layer_bytes, export_compressed
from evopress.export.directory import tensor_bytes
from evopress.models import adapter_for
from tests.test_models import one_thread, tiny_model  # noqa: F401  (one_thread: autouse fixture)

try:
    import compressed_tensors  # noqa: F401
    HAS_CT = True
except ImportError:
    HAS_CT = False
needs_ct = pytest.mark.skipif(not HAS_CT, reason="compressed-tensors is not installed (pip install "
                              "'compressed-tensors>=0.18', or run in the env of .ci/env/ctensors.sh)")

G = 32  # the test model's layers have 64 or 256 input columns
MIX = [parse_format("int2", group=G), parse_format("int4", group=G, symmetric=True), parse_format("int8", group=0),
       parse_format("int3", group=G, symmetric=True), parse_format("nvfp4"), parse_format("mxfp4"),
       parse_format("int5", group=G), parse_format("int6", group=G, symmetric=True), parse_format("bf16")]


def linears(adapter) -> dict:
    return {adapter.linear_name(b, s): m for b in range(adapter.num_blocks) for s, m in adapter.linears(b).items()}


def placeholder_levels(adapter, fmt_of) -> dict:
    """Levels with zero codes: enough for everything checked before a byte is computed."""
    return {name: Quantized(fmt_of(name), None if fmt_of(name).kind == "bf16" else
                            torch.zeros(m.weight.shape, dtype=torch.uint8), {}) for name, m in linears(adapter).items()}


@pytest.fixture(scope="module")
def mixed():
    """qwen2 (biases on q/k/v) with every kind of level, an NVFP4 layer holding an all-zero block."""
    model = tiny_model("qwen2")
    adapter = adapter_for(model)
    layers = linears(adapter)
    names = list(layers)
    with torch.no_grad():
        layers[names[4]].weight[3, 16:32] = 0  # names[4] is at MIX[4], nvfp4: its block scale is 0
    levels = {name: rtn_levels(layers[name].weight.data, [MIX[i % len(MIX)]])[0] for i, name in enumerate(names)}
    return adapter, levels


def test_ct_layer_bytes_counts_every_tensor_of_the_layout():
    rows, cols = 64, 256
    fmt = parse_format
    assert ct_layer_bytes(fmt("int4", symmetric=True), rows, cols) == 4 * 64 * 32 + 2 * 64 * 2 + 16
    assert ct_layer_bytes(fmt("int3"), rows, cols) == 4 * 64 * 24 + 2 * 64 * 2 + 16 + 4 * 6 * 2  # zeros: 64 rows in 6 words
    assert ct_layer_bytes(fmt("int8", group=0, symmetric=True), rows, cols) == 4 * 64 * 64 + 2 * 64 + 16
    assert ct_layer_bytes(fmt("mxfp4"), rows, cols) == 64 * 128 + 64 * 8
    assert ct_layer_bytes(fmt("nvfp4"), rows, cols) == 64 * 128 + 64 * 16 + 4
    assert ct_layer_bytes(fmt("bf16"), rows, cols) == 2 * 64 * 256
    for bits in range(2, 9):  # the minimal size plus weight_shape (int64 [2]) where nothing is padded
        f = fmt(f"int{bits}", symmetric=True)
        assert 8 * ct_layer_bytes(f, rows, cols) == f.size(rows, cols) + 128


@pytest.mark.parametrize("level, message", [("mxfp4+h32", "rotated"), ("fp8", "not exported")])
def test_unsupported_levels_are_refused_before_anything_is_written(tmp_path, level, message):
    adapter = adapter_for(tiny_model())
    first = next(iter(linears(adapter)))
    levels = placeholder_levels(adapter, lambda n: parse_format(level if n == first else "bf16"))
    with pytest.raises(ExportError, match=message):
        export_compressed(adapter, levels, None, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_levels_must_cover_the_model_with_its_shapes(tmp_path):
    adapter = adapter_for(tiny_model())
    levels = placeholder_levels(adapter, lambda n: parse_format("int4", group=G))
    first = next(iter(levels))
    with pytest.raises(ExportError, match="missing"):
        export_compressed(adapter, {k: v for k, v in levels.items() if k != first}, None, tmp_path / "out")
    levels[first] = Quantized(levels[first].format, torch.zeros(3, 64, dtype=torch.uint8), {})
    with pytest.raises(ExportError, match="build the levels on this model"):
        export_compressed(adapter, levels, None, tmp_path / "out")
    with pytest.raises(ExportError, match="multiple of"):
        export_compressed(adapter, placeholder_levels(adapter, lambda n: parse_format("int4")), None, tmp_path / "out")


def test_missing_library_says_what_to_install(tmp_path, monkeypatch):
    adapter = adapter_for(tiny_model())
    monkeypatch.setitem(sys.modules, "compressed_tensors", None)  # import fails as if not installed
    with pytest.raises(ExportError, match="pip install 'compressed-tensors"):
        export_compressed(adapter, placeholder_levels(adapter, lambda n: parse_format("bf16")), None, tmp_path / "out")


@needs_ct
def test_one_config_group_per_scheme_lists_its_modules(tmp_path, mixed):
    adapter, levels = mixed
    report = export_compressed(adapter, levels, None, tmp_path / "out")
    config = json.loads((report["path"] / "config.json").read_text())
    q = config["quantization_config"]
    assert config["dtype"] == "bfloat16" and q == report["quantization_config"]
    assert q["quant_method"] == "compressed-tensors" and q["format"] == "mixed-precision"
    assert q["quantization_status"] == "compressed" and q["version"] == compressed_tensors.__version__
    groups = {tuple(g["targets"]): g for g in q["config_groups"].values()}
    for fmt in MIX[:-1]:
        group = groups.pop(tuple(n for n, lv in levels.items() if lv.format == fmt))
        w = group["weights"]
        assert w["num_bits"] == fmt.bits and w["type"] == ("int" if fmt.kind == "int" else "float")
        assert w["group_size"] == (fmt.group or None) and w["symmetric"] == (fmt.symmetric or fmt.kind != "int")
        assert group["format"] == {"int": "pack-quantized", "nvfp4": "nvfp4-pack-quantized",
                                   "mxfp4": "mxfp4-pack-quantized"}[fmt.kind]
    assert not groups
    assert q["ignore"] == [n for n, lv in levels.items() if lv.format.kind == "bf16"] + ["lm_head"]


@needs_ct
def test_each_layer_takes_ct_layer_bytes_and_holds_our_codes(tmp_path, mixed):
    from compressed_tensors.compressors.pack_quantized.helpers import unpack_from_int32

    adapter, levels = mixed
    report = export_compressed(adapter, levels, None, tmp_path / "out")
    written = load_file(str(report["path"] / "model.safetensors"))
    layer = {name: {k.removeprefix(name + "."): t for k, t in written.items() if k.startswith(name + ".weight")}
             for name in levels}
    for name, level in levels.items():
        fmt, tensors = level.format, layer[name]
        assert sum(t.numel() * t.element_size() for t in tensors.values()) == report["layer_bytes"][name]
        assert report["layer_bytes"][name] == ct_layer_bytes(fmt, *linears(adapter)[name].weight.shape)
        if fmt.kind == "int":
            codes = unpack_from_int32(tensors["weight_packed"], fmt.bits, level.codes.shape).int() + 2 ** (fmt.bits - 1)
            assert torch.equal(codes, level.codes.int()), name
        elif fmt.kind != "bf16":  # two codes a byte, the first in the low nibble
            packed = tensors["weight_packed"]
            codes = torch.stack([packed & 15, packed >> 4], dim=-1).reshape(level.codes.shape)
            live = level.params["block"].float().repeat_interleave(16, -1) != 0 if fmt.kind == "nvfp4" else ...
            assert torch.equal(e2m1_decode(codes)[live], e2m1_decode(level.codes)[live]), name
    quantized = sum(report["layer_bytes"].values())
    rest = {k: t for k, t in adapter.dense_state_dict().items() if k.rsplit(".", 1)[0] not in levels or k.endswith(".bias")}
    assert tensor_bytes(report["path"]) == report["weight_bytes"] == quantized + sum(2 * t.numel() for t in rest.values())
    by_kind = report["bytes_by_kind"]
    assert by_kind.pop("other") == sum(2 * t.numel() for t in rest.values()) and sum(by_kind.values()) == quantized
    assert set(by_kind) == {"int", "nvfp4", "mxfp4", "bf16"}


@needs_ct
def test_the_library_decompresses_to_our_values(tmp_path, mixed):
    from compressed_tensors.compressors import BaseCompressor
    from compressed_tensors.quantization import QuantizationScheme

    adapter, levels = mixed
    report = export_compressed(adapter, levels, None, tmp_path / "out")
    written = load_file(str(report["path"] / "model.safetensors"))
    scheme_of = {n: QuantizationScheme.model_validate(g) for g in report["quantization_config"]["config_groups"].values()
                 for n in g["targets"]}
    for name, module in linears(adapter).items():
        ours = dequantize(levels[name], module.weight.data)
        if name not in scheme_of:
            assert torch.equal(written[f"{name}.weight"], ours.to(torch.bfloat16)), name
            continue
        state = {k.removeprefix(name + "."): t for k, t in written.items() if k.startswith(name + ".weight")}
        if levels[name].format.kind == "int":  # decoded in the scale's dtype: float32 makes it exact
            state["weight_scale"] = state["weight_scale"].float()
        scheme = scheme_of[name]
        values = BaseCompressor.get_value_from_registry(scheme.format).decompress(state, scheme)["weight"]
        assert torch.equal(values.float(), ours.to(values.dtype).float()), name  # FP4 decodes to bf16


@needs_ct
@pytest.mark.parametrize("name, layout", [("int4", "pack-quantized"), ("nvfp4", "nvfp4-pack-quantized"),
                                          ("mxfp4", "mxfp4-pack-quantized")])
def test_one_layout_is_the_top_level_format(tmp_path, name, layout):
    adapter = adapter_for(tiny_model())
    levels = {n: rtn_levels(m.weight.data, [parse_format(name, group=G)])[0] for n, m in linears(adapter).items()}
    report = export_compressed(adapter, levels, None, tmp_path / "out")
    assert report["quantization_config"]["format"] == layout
    assert len(report["quantization_config"]["config_groups"]) == 1
    export_compressed(adapter, levels, None, tmp_path / "out", overwrite=True)  # an earlier export is replaced
    with pytest.raises(ExportError, match="already exists"):
        export_compressed(adapter, levels, None, tmp_path / "out")
