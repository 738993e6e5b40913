"""The GPTQ export holds every layer's codes and params exactly, in the bytes its cost says.

A mixed export of the tiny model (rtn levels of 2, 3, 4 and 8 bits, asymmetric and symmetric,
groups of 128 and 64, per channel, and bf16 layers) is read back with an unpacker written here
from the layout's description, independently of the exporter: each 32-bit word is split into its
bits, the words of a column are laid end to end as one bit stream and cut into fields. qzeros
are read as GPTQModel reads v1 (the packed ones added to each word for 2/4/8 bits, one per field
modulo 8 for 3 bits); integration/test_gptqmodel.py shows GPTQModel itself agrees. GPTQModel and
vLLM load the export in the integration tier.
"""

from __future__ import annotations

import itertools
import json
import math
import re

import pytest
import torch
from safetensors import safe_open

from evopress.compress.formats import parse_format
from evopress.compress.gptq import Quantized, dequantize, rtn_levels
from evopress.errors import ExportError
from evopress.export.directory import tensor_bytes
from evopress.export.gptq import export_gptq, gptq_layer_bytes, gptq_tensors

# Level specs cycled over the layers: every width, both symmetries, three group settings, bf16.
CYCLE = ("int2", "int3", "int4", "int8", "bf16", "int4 sym g64", "int3 sym", "int8 per-channel", "int2 g64")


def level_format(spec: str):
    name, *extra = spec.split()
    group = 64 if "g64" in extra else 0 if "per-channel" in extra else 128
    return parse_format(name, group=group, symmetric="sym" in extra)


# The independent reader.

def bits_of(words: torch.Tensor) -> torch.Tensor:
    """[..., n] int32 -> [..., 32 n] 0/1, least-significant bit first, word after word."""
    shifts = torch.arange(32, dtype=torch.int64)
    return ((words.to(torch.int64).unsqueeze(-1) >> shifts) & 1).flatten(-2)


def fields(words: torch.Tensor, bits: int) -> torch.Tensor:
    """Fields of `bits` bits from the bit stream of the last dim's words."""
    stream = bits_of(words)
    chunks = stream.reshape(*stream.shape[:-1], -1, bits)
    return (chunks << torch.arange(bits, dtype=torch.int64)).sum(-1)


def read_codes(qweight: torch.Tensor, bits: int) -> torch.Tensor:
    return fields(qweight.T, bits)  # qweight is [cols*bits/32, rows]: rows' words along dim 0


def read_zeros(qzeros: torch.Tensor, bits: int) -> torch.Tensor:
    """Zero points [groups, rows] as GPTQModel restores v1 ones."""
    if bits == 3:
        return (fields(qzeros, 3) + 1) % 8
    ones = sum(1 << (bits * i) for i in range(32 // bits))  # 0x11111111 for 4 bits
    word = (qzeros.to(torch.int64) + ones) % 2**32  # an integer addition, carries included
    return fields(word, bits)


def read_layer(f, name: str, bits: int) -> dict:
    t = {k: f.get_tensor(f"{name}.{k}") for k in ("qweight", "qzeros", "scales", "g_idx")}
    return {"codes": read_codes(t["qweight"], bits), "zeros": read_zeros(t["qzeros"], bits).T,
            "scales": t["scales"].T, "g_idx": t["g_idx"], "dtypes": {k: v.dtype for k, v in t.items()}}


# Fixtures.

@pytest.fixture(scope="module")
def tiny():
    from evopress.models import adapter_for, load_model
    from evopress.zoo import tiny_model_dir

    model, tokenizer = load_model(tiny_model_dir(), dtype="float32")
    return adapter_for(model), tokenizer


def linears(adapter) -> dict:
    return {adapter.linear_name(b, s): m for b in range(adapter.num_blocks) for s, m in adapter.linears(b).items()}


@pytest.fixture(scope="module")
def levels(tiny):
    adapter, _ = tiny
    modules = linears(adapter)
    return {name: rtn_levels(module.weight.data, [level_format(spec)])[0]
            for (name, module), spec in zip(modules.items(), itertools.cycle(CYCLE))}


@pytest.fixture(scope="module")
def exported(tiny, levels, tmp_path_factory):
    adapter, tokenizer = tiny
    info = export_gptq(adapter, levels, tokenizer, tmp_path_factory.mktemp("gptq") / "model")
    return info, safe_open(str(info["path"] / "model.safetensors"), framework="pt")


# Tests.

@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_codes_zeros_scales_and_groups_read_back_bit_for_bit(exported, levels, bits):
    _, f = exported
    checked = 0
    for name, level in levels.items():
        fmt = level.format
        if fmt.kind != "int" or fmt.bits != bits:
            continue
        got = read_layer(f, name, bits)
        rows, cols = level.codes.shape
        assert got["dtypes"] == {"qweight": torch.int32, "qzeros": torch.int32, "scales": torch.float16,
                                 "g_idx": torch.int32}
        assert torch.equal(got["codes"], level.codes.long()), name
        assert torch.equal(got["zeros"], level.params["zero"].reshape(rows, -1).long()), name
        assert torch.equal(got["scales"], level.params["scale"].reshape(rows, -1)), name
        assert torch.equal(got["g_idx"].long(), torch.arange(cols) // (fmt.group or cols)), name
        # and the runtime's scale * (code - zero) is the level's value
        value = got["scales"].float()[:, got["g_idx"].long()] * (got["codes"] - got["zeros"][:, got["g_idx"].long()])
        assert torch.equal(value, dequantize(level, None)), name
        checked += 1
    assert checked >= 5


def test_three_bit_words_follow_the_10_1_10_1_10_pattern():
    codes = torch.zeros(32, 32, dtype=torch.uint8)  # 32 rows: their 3-bit zero points fill whole words too
    codes[0, 10] = 0b101  # straddles words 0 and 1: bits 30-31 of word 0, bit 0 of word 1
    codes[0, 21] = 0b110  # straddles words 1 and 2: bit 31 of word 1, bits 0-1 of word 2
    codes[0, 31] = 0b111  # the last field: bits 29-31 of word 2
    level = Quantized(parse_format("int3", group=32), codes, {"scale": torch.ones(32, 1, dtype=torch.float16),
                                                              "zero": torch.full((32, 1), 4, dtype=torch.uint8)})
    words = [w & 0xFFFFFFFF for w in gptq_tensors(level)["qweight"][:, 0].tolist()]
    assert words == [0b01 << 30, (0b1 << 0) | (0b0 << 31), (0b11 << 0) | (0b111 << 29)]


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_zero_points_of_zero_and_of_the_largest_code_survive_v1(bits):
    rows, cols = 64, 128
    zero = torch.randint(0, 2**bits, (rows, 2), dtype=torch.uint8)
    zero[::3] = 0  # zero - 1 does not fit a field: the v1 encoding must still come back exactly
    zero[1::3] = 2**bits - 1
    level = Quantized(parse_format(f"int{bits}", group=64), torch.randint(0, 2**bits, (rows, cols), dtype=torch.uint8),
                      {"scale": torch.ones(rows, 2, dtype=torch.float16), "zero": zero})
    t = gptq_tensors(level)
    assert torch.equal(read_zeros(t["qzeros"], bits).T, zero.long())
    assert torch.equal(read_codes(t["qweight"], bits), level.codes.long())


def test_layer_bytes_are_the_bytes_on_disk(exported, levels, tiny):
    info, f = exported
    shapes = {n: m.weight.shape for n, m in linears(tiny[0]).items()}
    header_bytes = {}
    for key in f.keys():
        name = key.rsplit(".", 1)[0]
        if name in levels:
            t = f.get_slice(key)
            size = math.prod(t.get_shape()) * {"I32": 4, "F16": 2, "BF16": 2}[t.get_dtype()]
            header_bytes[name] = header_bytes.get(name, 0) + size
    for name, level in levels.items():
        assert gptq_layer_bytes(level.format, *shapes[name]) == header_bytes[name], name
    assert info["weight_bytes"] == tensor_bytes(info["path"]) == sum(info["bytes_by_kind"].values())
    quantized = sum(header_bytes[n] for n, lv in levels.items() if lv.format.kind == "int")
    assert info["bytes_by_kind"]["int"] == quantized
    assert info["bytes_by_kind"]["bf16"] == sum(header_bytes[n] for n, lv in levels.items() if lv.format.kind == "bf16")


def test_config_has_the_most_common_setting_and_one_rule_per_other_layer(exported, levels):
    info, _ = exported
    config = json.loads((info["path"] / "config.json").read_text())
    q = config["quantization_config"]
    assert q == info["quantization_config"] and config["dtype"] == "bfloat16"
    assert (q["quant_method"], q["checkpoint_format"], q["desc_act"]) == ("gptq", "gptq", False)
    default = (q["bits"], q["group_size"], q["sym"])
    settings = {n: (lv.format.bits, lv.format.group or -1, lv.format.symmetric) for n, lv in levels.items()
                if lv.format.kind == "int"}
    assert list(settings.values()).count(default) == max(list(settings.values()).count(s) for s in settings.values())
    for name in levels:  # first matching rule, as GPTQModel and vLLM read them
        rule = next(((k, v) for k, v in q["dynamic"].items() if re.match(k[2:], name)), None)
        others = [n for n in levels if rule and n != name and re.match(rule[0][2:], n)]
        assert not others, (name, others)
        if levels[name].format.kind == "bf16":
            assert rule and rule[0].startswith("-:") and rule[1] == {}, name
        elif settings[name] == default:
            assert rule is None, name
        else:
            assert rule[0].startswith("+:") and tuple(rule[1][k] for k in ("bits", "group_size", "sym")) == settings[name]


def test_unquantized_tensors_are_bf16_and_layers_kept_dense_keep_their_weight(exported, levels, tiny):
    _, f = exported
    state = tiny[0].dense_state_dict()
    for key in f.keys():
        if key.endswith(".weight"):
            t = f.get_tensor(key)
            assert t.dtype == torch.bfloat16 and torch.equal(t, state[key].to(torch.bfloat16)), key
    bf16 = [n for n, lv in levels.items() if lv.format.kind == "bf16"]
    assert bf16 and all(f"{n}.weight" in f.keys() and f"{n}.qweight" not in f.keys() for n in bf16)


@pytest.mark.parametrize("spec, message", [
    ("mxfp4", "GPTQ carries int2, int3, int4, int8 and bf16, not mxfp4"),
    ("nvfp4", "not nvfp4"),
    ("fp8", "not fp8"),
    ("int5", "not int5"),
    ("int4+h32", "rotated"),
])
def test_levels_it_cannot_carry_are_refused_before_writing(tiny, levels, tmp_path, spec, message):
    adapter, tokenizer = tiny
    name, module = next(iter(linears(adapter).items()))
    bad = dict(levels, **{name: rtn_levels(module.weight.data, [parse_format(spec)])[0]})
    with pytest.raises(ExportError, match=re.escape(message)):
        export_gptq(adapter, bad, tokenizer, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not list(tmp_path.iterdir())


def test_shapes_it_cannot_lay_out_are_refused():
    with pytest.raises(ExportError, match="not a multiple of int4's group of 96"):
        gptq_layer_bytes(parse_format("int4", group=96), 128, 128)
    with pytest.raises(ExportError, match="48 output rows do not fill whole 32-bit words at 3 bits"):
        gptq_layer_bytes(parse_format("int3", group=64), 48, 128)
    with pytest.raises(ExportError, match="80 input columns do not fill whole 32-bit words at 3 bits"):
        gptq_layer_bytes(parse_format("int3", group=16), 64, 80)
    assert gptq_layer_bytes(parse_format("int4", group=32), 8, 96) == 8 * 96 // 2 + 3 * 4 + 2 * 3 * 8 + 4 * 96


def test_levels_must_name_every_linear_layer(tiny, levels, tmp_path):
    adapter, tokenizer = tiny
    partial = dict(itertools.islice(levels.items(), 1, None))
    with pytest.raises(ExportError, match="every linear layer.*missing"):
        export_gptq(adapter, partial, tokenizer, tmp_path / "out")
    with pytest.raises(ExportError, match="no layer is quantized"):
        export_gptq(adapter, {n: Quantized(parse_format("bf16"), None, {}) for n in levels}, tokenizer, tmp_path / "o")
