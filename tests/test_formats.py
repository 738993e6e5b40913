"""Number formats and GPTQ levels (`compress.formats`, `compress.gptq`).

The FP4, FP8 and E8M0 decoders here are written from the specifications (OCP MX v1.0 for E2M1 and
E8M0, OFP8 for E4M3), not from `formats.py`, and the stored codes and params of every level are
decoded with them: what a store keeps must mean, bit for bit, what `dequantize` returns.
"""

import math

import pytest
import torch

from evopress.compress.formats import (E2M1, ROTATIONS, Format, check_shape, e2m1_decode, e2m1_encode, e4m3,
                                       hadamard, parse_format, rotate)
from evopress.compress.gptq import dequantize, gptq_layers, gptq_levels, rtn_levels
from evopress.compress.sparsegpt import relative_errors
from evopress.errors import RecipeError

# Decoders from the specifications.


def fp4_value(code: int) -> float:
    """E2M1: sign, 2 exponent bits (bias 1), 1 mantissa bit; exponent 0 is subnormal (0.m · 2^0)."""
    sign = -1.0 if code & 0b1000 else 1.0
    exp, man = (code >> 1) & 0b11, code & 1
    mag = man * 0.5 if exp == 0 else (1 + man / 2) * 2.0 ** (exp - 1)
    return sign * mag


def e4m3_value(byte: int) -> float:
    """E4M3 ("fn"): sign, 4 exponent bits (bias 7), 3 mantissa bits; S.1111.111 is NaN, no infinities."""
    sign = -1.0 if byte & 0x80 else 1.0
    exp, man = (byte >> 3) & 0b1111, byte & 0b111
    if exp == 0b1111 and man == 0b111:
        return math.nan
    mag = man / 8 * 2.0 ** -6 if exp == 0 else (1 + man / 8) * 2.0 ** (exp - 7)
    return sign * mag


def e8m0_value(byte: int) -> float:
    """E8M0: 2^(byte - 127); 0xFF is NaN."""
    return math.nan if byte == 255 else 2.0 ** (byte - 127)


FP4 = torch.tensor([fp4_value(c) for c in range(16)], dtype=torch.float32)
E4M3 = torch.tensor([e4m3_value(b) for b in range(256)], dtype=torch.float32)
E8M0 = torch.tensor([e8m0_value(b) for b in range(256)], dtype=torch.float32)
FP4_MAGNITUDES = FP4[:8]
E4M3_POSITIVE = E4M3[:0x7F]  # bytes 0x00..0x7E: 0 .. 448, in increasing order


def nearest_code(values: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Index of the nearest entry of `table` for every value (brute force, float64), a tie going to
    the even index (for E2M1 magnitudes and E4M3 bytes that is the even mantissa); saturates."""
    d = (values.double().clamp(max=float(table.max())).reshape(-1, 1) - table.double()).abs()
    best = d == d.min(dim=1, keepdim=True).values
    even = best & (torch.arange(len(table)) % 2 == 0)
    pick = torch.where(even.any(dim=1), even.int().argmax(dim=1), best.int().argmax(dim=1))
    return pick.reshape(values.shape)


def fp4_reference(x: torch.Tensor) -> torch.Tensor:
    """E2M1 codes of x by brute force; a value that rounds to zero magnitude carries no sign bit."""
    mag = nearest_code(x.abs(), FP4_MAGNITUDES)
    return (mag | ((x < 0) & (mag > 0)).long() << 3).to(torch.uint8)


def spread(values: torch.Tensor, group: int) -> torch.Tensor:
    """Per-group params [rows, groups] as [rows, groups·group]."""
    return values.repeat_interleave(group, dim=-1)


def layer(rows=32, cols=256, samples=1024, seed=0, dead=()):
    """A weight and the Hessian 2/N XᵀX of correlated inputs X = randn @ mixing (dead: zero input columns)."""
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(cols, cols, generator=g) / cols**0.5 + torch.eye(cols)
    x = torch.randn(samples, cols, generator=g) @ mix
    x[:, list(dead)] = 0
    return torch.randn(rows, cols, generator=g), 2 * x.T @ x / samples


def scaled_weight(rows=16, cols=256, seed=0):
    """Rows over six decades of magnitude, so block scales cover many exponents."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, cols, generator=g)
    return w * 10 ** torch.linspace(-4, 2, rows).unsqueeze(1)


def raw(t: torch.Tensor) -> torch.Tensor:
    """A tensor's bytes' worth, comparable with torch.equal whatever its dtype (float8 included)."""
    return t.view(torch.uint8) if t.dtype == torch.float8_e4m3fn else t


def assert_same_level(a, b):
    assert a.format == b.format
    assert (a.codes is None) == (b.codes is None)
    if a.codes is not None:
        assert a.codes.dtype == b.codes.dtype == torch.uint8
        assert torch.equal(a.codes, b.codes), a.format.name
    assert a.params.keys() == b.params.keys()
    for k in a.params:
        assert a.params[k].dtype == b.params[k].dtype, (a.format.name, k)
        assert torch.equal(raw(a.params[k]), raw(b.params[k])), (a.format.name, k)


# 1. FP4, FP8, E8M0 bit for bit.

def test_spec_tables():
    assert FP4[:8].tolist() == [0, 0.5, 1, 1.5, 2, 3, 4, 6]
    assert FP4[8:].tolist() == [-0.0, -0.5, -1, -1.5, -2, -3, -4, -6]
    assert E4M3[0x7E] == 448 and E4M3[0x01] == 2.0 ** -9 and E4M3[0x08] == 2.0 ** -6
    assert torch.all(E4M3_POSITIVE[1:] > E4M3_POSITIVE[:-1])
    assert E8M0[127] == 1 and E8M0[0] == 2.0 ** -127 and E8M0[254] == 2.0 ** 127


def test_e4m3_decoder_matches_torch_on_every_byte():
    theirs = torch.arange(256, dtype=torch.uint8).view(torch.float8_e4m3fn).float()
    nan = torch.tensor([b in (0x7F, 0xFF) for b in range(256)])
    assert torch.isnan(theirs[nan]).all() and torch.isnan(E4M3[nan]).all()
    assert torch.equal(theirs[~nan], E4M3[~nan])
    assert torch.equal(theirs[~nan].sign(), E4M3[~nan].sign())  # -0.0 at 0x80 included
    assert torch.equal(torch.signbit(theirs[~nan]), torch.signbit(E4M3[~nan]))


def test_e4m3_rounds_to_nearest_even_and_saturates():
    mids = (E4M3_POSITIVE[1:] + E4M3_POSITIVE[:-1]) / 2  # exact in float32
    g = torch.Generator().manual_seed(1)
    x = torch.cat([mids, torch.nextafter(mids, torch.zeros(())), torch.nextafter(mids, torch.full((), 1e4)),
                   torch.rand(2000, generator=g) * 500, torch.tensor([448.0, 449.0, 480.0, 1e6])])
    expect = E4M3_POSITIVE[nearest_code(x, E4M3_POSITIVE)]
    assert torch.equal(e4m3(x), expect)
    assert torch.equal(e4m3(-x), -expect)


def test_every_fp4_code_decodes_to_the_spec_table():
    codes = torch.arange(16, dtype=torch.uint8)
    got = e2m1_decode(codes)
    assert torch.equal(got, FP4)
    assert torch.equal(torch.signbit(got[1:]), torch.signbit(FP4[1:]))
    assert torch.tensor(E2M1).tolist() == FP4[:8].tolist()


def test_e2m1_encode_is_nearest_ties_to_even_saturating():
    mids = (FP4_MAGNITUDES[1:] + FP4_MAGNITUDES[:-1]) / 2  # 0.25 0.75 1.25 1.75 2.5 3.5 5
    below, above = torch.nextafter(mids, torch.zeros(())), torch.nextafter(mids, torch.full((), 10.0))
    g = torch.Generator().manual_seed(2)
    x = torch.cat([mids, below, above, FP4_MAGNITUDES, torch.rand(4000, generator=g) * 8,
                   torch.tensor([6.0, 6.5, 7.0, 100.0, 1e30, math.inf, 1e-30, 0.0])])
    x = torch.cat([x, -x])
    got = e2m1_encode(x)
    assert got.dtype == torch.uint8 and int(got.max()) <= 15
    assert torch.equal(got, fp4_reference(x))
    # the ties by name: down to the even code at 0.25, 1.25, 2.5, 5; up at 0.75, 1.75, 3.5
    assert e2m1_encode(mids).tolist() == [0, 2, 2, 4, 4, 6, 6]
    assert e2m1_encode(torch.tensor([7.0, -7.0, 1e9, -1e9])).tolist() == [7, 15, 7, 15]


def decode_mxfp4(level) -> torch.Tensor:
    exp = level.params["exp"]
    assert exp.dtype == torch.uint8 and int(exp.max()) < 255
    return spread(E8M0[exp.long()], 32) * FP4[level.codes.long()]


def decode_nvfp4(level) -> torch.Tensor:
    block, glob = level.params["block"], level.params["global"]
    assert block.dtype == torch.float8_e4m3fn and glob.dtype == torch.float32 and glob.dim() == 0
    return spread(E4M3[block.view(torch.uint8).long()] / glob, 16) * FP4[level.codes.long()]


def decode_fp8(level) -> torch.Tensor:
    scale = level.params["scale"]
    assert scale.dtype == torch.float32 and scale.shape == level.codes.shape[:1]
    return scale.unsqueeze(1) * E4M3[level.codes.long()]


def test_mxfp4_and_nvfp4_and_fp8_decode_by_the_spec_to_dequantize():
    w = scaled_weight()
    w[3, :32] = 0  # an all-zero MX block
    mx, nv, f8 = rtn_levels(w, [parse_format("mxfp4"), parse_format("nvfp4"), parse_format("fp8")])
    for level, decode in ((mx, decode_mxfp4), (nv, decode_nvfp4), (f8, decode_fp8)):
        assert level.codes.dtype == torch.uint8 and level.codes.shape == w.shape
        assert torch.equal(decode(level), dequantize(level, w)), level.format.name
    assert int(mx.codes.max()) <= 15 and int(nv.codes.max()) <= 15
    assert torch.equal(dequantize(mx, w)[3, :32], torch.zeros(32))
    # fp8 keeps a lot: relative error of a single E4M3 rounding
    assert ((dequantize(f8, w) - w).abs() <= w.abs() * 2.0 ** -4 + 1e-30).all()


def test_mx_shared_exponent_follows_ocp_mx():
    w = scaled_weight()
    level = rtn_levels(w, [parse_format("mxfp4")])[0]
    exp = level.params["exp"].long() - 127
    amax = w.abs().reshape(w.shape[0], -1, 32).amax(-1)
    expect = torch.tensor([[math.floor(math.log2(a)) - 2 for a in row] for row in amax.double().tolist()])
    assert torch.equal(exp, expect)
    ratio = amax / torch.exp2(exp.float())
    assert ((ratio >= 4) & (ratio < 8)).all(), ratio
    # codes are the nearest E2M1 of w / 2^exp, ties to even (a brute-force search)
    x = w / spread(torch.exp2(exp.float()), 32)
    assert torch.equal(level.codes, fp4_reference(x))


@pytest.mark.parametrize("k", [-9, -5, -3, -2, 3, 4, 7])
def test_mx_shared_exponent_just_below_a_power_of_two(k):
    """amax = the float32 just below 2^k has floor(log2 amax) = k - 1: its block must land in [4, 8)."""
    w = torch.full((1, 32), 2.0 ** (k - 3))
    w[0, 5] = torch.nextafter(torch.tensor(2.0 ** k), torch.tensor(0.0))
    exp = int(rtn_levels(w, [parse_format("mxfp4")])[0].params["exp"]) - 127
    assert exp == (k - 1) - 2, f"amax just below 2^{k}: shared exponent {exp}, OCP MX gives {k - 3}"


def test_nvfp4_scales():
    w = scaled_weight(seed=3) / 50
    level = rtn_levels(w, [parse_format("nvfp4")])[0]
    amax = w.abs().max()
    glob = level.params["global"]
    # 448·6/amax, to the last bit but one (torch divides a number by a tensor as a reciprocal times it)
    torch.testing.assert_close(glob, torch.tensor(448.0 * 6.0) / amax, rtol=2.0 ** -23, atol=0)
    block = E4M3[level.params["block"].view(torch.uint8).long()]
    wanted = w.abs().reshape(w.shape[0], -1, 16).amax(-1) / 6.0 * glob  # the ideal block scale, amax/6
    assert torch.equal(block, E4M3_POSITIVE[nearest_code(wanted, E4M3_POSITIVE)])  # its nearest E4M3
    assert float(block.max()) <= 448 and float(block.max()) >= 416  # the tensor's amax block is near the top
    # blocks far below the tensor's amax (the first row) flush to a zero scale, and to zeros
    flushed = spread(block == 0, 16)
    assert flushed[0].all() and not flushed[4:].any()
    assert torch.equal(dequantize(level, w)[flushed], torch.zeros(int(flushed.sum())))
    x = w / spread(block / glob, 16)
    assert torch.equal(level.codes[~flushed], fp4_reference(x)[~flushed])


# 2. Integers.

INT_CASES = [(bits, symmetric, group) for bits in range(2, 9) for symmetric in (False, True) for group in (128, 32, 0)]


@pytest.mark.parametrize("bits,symmetric,group", INT_CASES)
def test_integer_levels(bits, symmetric, group):
    g = torch.Generator().manual_seed(bits)
    rows, cols = 8, 256
    w = torch.randn(rows, cols, generator=g)
    w[0, :128] = 0  # an all-zero group
    w[1] = w[1].abs() + 0.1  # all positive: the asymmetric zero is 0
    w[2, 7] = 20.0  # an outlier
    fmt = parse_format(f"int{bits}", group=group, symmetric=symmetric)
    level = rtn_levels(w, [fmt])[0]
    maxq = 2**bits - 1
    codes, scale, zero = level.codes, level.params["scale"], level.params["zero"]
    width = group or cols
    assert codes.dtype == torch.uint8 and codes.shape == w.shape and int(codes.max()) <= maxq
    assert scale.dtype == torch.float16 and zero.dtype == torch.uint8
    assert scale.shape == zero.shape == ((rows, cols // group) if group else (rows,))
    assert (scale > 0).all() and torch.isfinite(scale).all()
    assert int(zero.max()) <= maxq
    if symmetric:
        assert (zero == 2 ** (bits - 1)).all()
    s = spread(scale.float().reshape(rows, -1), width)
    z = spread(zero.float().reshape(rows, -1), width)
    deq = s * (codes.float() - z)
    assert torch.equal(dequantize(level, w), deq)
    # nearest rounding: no grid point of the weight's group is closer
    grid = s.unsqueeze(-1) * (torch.arange(maxq + 1).float() - z.unsqueeze(-1))
    best = (w.unsqueeze(-1) - grid).abs().min(dim=-1).values
    err = (w - deq).abs()
    assert (err <= best + 1e-6 * s).all()
    # and the grid spans the group: half a step, plus fp16's rounding of the step over the whole range
    assert (err <= s * (0.5 + maxq * 2.0 ** -11) * (1 + 1e-6)).all()
    assert torch.equal(deq[0, :128], torch.zeros(128))
    if not symmetric:
        assert (zero.reshape(rows, -1)[1] == 0).all()


def test_integer_widths_batched_in_one_family_equal_separate():
    w = torch.randn(8, 256, generator=torch.Generator().manual_seed(4))
    fmts = [parse_format(f"int{b}") for b in range(2, 9)]
    h = torch.eye(256)
    together = gptq_levels(w, h, fmts)
    for fmt, level in zip(fmts, together):
        assert_same_level(level, rtn_levels(w, [fmt])[0])


# 3. Sizes and names.

SIZES = [  # (level, group, symmetric, rows, cols, bits counted by hand)
    ("int4", 128, False, 64, 256, 64 * 256 * 4 + 64 * 2 * (16 + 4)),  # codes + (fp16 scale + int4 zero) per group
    ("int4", 128, True, 64, 256, 64 * 256 * 4 + 64 * 2 * 16),  # symmetric: the zero is implied
    ("int3", 32, False, 10, 96, 10 * 96 * 3 + 10 * 3 * (16 + 3)),
    ("int2", 64, True, 3, 128, 3 * 128 * 2 + 3 * 2 * 16),
    ("int8", 0, False, 5, 200, 5 * 200 * 8 + 5 * (16 + 8)),  # per output channel
    ("int4", 128, False, 2, 200, 2 * 200 * 4 + 2 * 2 * (16 + 4)),  # a partial last group still has a scale
    ("mxfp4", 128, False, 64, 256, 64 * 256 * 4 + 64 * 8 * 8),  # E8M0 byte per 32
    ("mxfp4+h32", 128, False, 64, 256, 64 * 256 * 4 + 64 * 8 * 8),  # a rotation is free
    ("nvfp4", 128, False, 64, 256, 64 * 256 * 4 + 64 * 16 * 8 + 32),  # E4M3 per 16, one fp32 per tensor
    ("nvfp4+h16", 128, False, 7, 48, 7 * 48 * 4 + 7 * 3 * 8 + 32),
    ("fp8", 128, False, 64, 256, 64 * 256 * 8 + 64 * 32),  # fp32 scale per output channel
    ("bf16", 128, False, 64, 256, 64 * 256 * 16),
]


@pytest.mark.parametrize("name,group,symmetric,rows,cols,bits", SIZES)
def test_size_is_a_hand_count(name, group, symmetric, rows, cols, bits):
    fmt = parse_format(name, group=group, symmetric=symmetric)
    assert fmt.size(rows, cols) == bits
    assert fmt.bits_per_weight(rows, cols) == bits / (rows * cols)


def test_size_counts_the_params_a_level_stores():
    rows, cols = 16, 256
    w = torch.randn(rows, cols, generator=torch.Generator().manual_seed(5))
    widths = {"scale": 16, "exp": 8, "block": 8, "global": 32}
    for name, symmetric in (("int3", False), ("int5", True), ("mxfp4", False), ("nvfp4", False), ("fp8", False)):
        fmt = parse_format(name, symmetric=symmetric)
        level = rtn_levels(w, [fmt])[0]
        counted = level.codes.numel() * fmt.bits
        for k, v in level.params.items():
            counted += v.numel() * (fmt.bits if k == "zero" else 32 if name == "fp8" else widths[k])
        if symmetric:
            counted -= level.params["zero"].numel() * fmt.bits  # implied, not stored
        assert fmt.size(rows, cols) == counted, name


def test_parse_format_reads_every_level():
    assert parse_format("int4") == Format("int", 4, 128, False)
    assert parse_format(" INT3 ", group=64, symmetric=True) == Format("int", 3, 64, True)
    assert parse_format("mxfp4") == Format("mxfp4", 4, 32)
    assert parse_format("nvfp4+h16") == Format("nvfp4", 4, 16, rotation=16)
    assert parse_format("fp8+h128") == Format("fp8", 8, 0, rotation=128)
    assert parse_format("bf16") == Format("bf16", 16, 0)
    names = [f"int{b}" for b in range(2, 9)] + ["mxfp4", "nvfp4", "fp8"]
    for name in names + [f"{n}+h{r}" for n in names for r in ROTATIONS] + ["bf16"]:
        assert parse_format(name).name == name
        assert parse_format(parse_format(name).name) == parse_format(name)


@pytest.mark.parametrize("name,says", [
    ("int9", ["'int9'", "int2..int8", "mxfp4", "+h32"]),
    ("int1", ["'int1'", "int2..int8"]),
    ("fp4", ["'fp4'", "nvfp4"]),
    ("", ["''"]),
    ("mxfp4+32", ["'mxfp4+32'", "+h16"]),
    ("mxfp4+h64", ["'mxfp4+h64'", "64", "(16, 32, 128)"]),
    ("int4+h8", ["'int4+h8'", "8", "(16, 32, 128)"]),
    ("mxfp4+h0", ["'mxfp4+h0'", "(16, 32, 128)"]),
    ("bf16+h32", ["bf16", "rotation"]),
])
def test_parse_format_errors_say_what_is_wrong(name, says):
    with pytest.raises(RecipeError) as info:
        parse_format(name)
    for text in says:
        assert text in str(info.value), (text, str(info.value))


def test_check_shape_refuses_what_does_not_tile():
    check_shape(parse_format("int4"), 8, 256, "q_proj")
    with pytest.raises(RecipeError, match=r"q_proj: 200 input columns .* group size 128"):
        check_shape(parse_format("int4"), 8, 200, "q_proj")
    with pytest.raises(RecipeError, match=r"rotation block size 128"):
        check_shape(parse_format("mxfp4+h128"), 8, 96, "down_proj")


# 4. GPTQ.

GPTQ_NAMES = ["int2", "int3", "int4", "mxfp4", "nvfp4", "fp8", "mxfp4+h32", "int4+h128"]


def errors(w, h, levels):
    return relative_errors(w, torch.stack([dequantize(level, w) for level in levels]), h)


def test_gptq_beats_round_to_nearest():
    w, h = layer()
    fmts = [parse_format(n) for n in GPTQ_NAMES]
    gptq, rtn = errors(w, h, gptq_levels(w, h, fmts)), errors(w, h, rtn_levels(w, fmts))
    for name, g, r in zip(GPTQ_NAMES, gptq, rtn):
        assert g < 0.8 * r, (name, g, r)
    assert rtn[0] > rtn[1] > rtn[2]  # and fewer bits cost more


def test_batched_sweep_equals_separate_sweeps_bit_for_bit():
    w, h = layer()
    names = ["int2", "int4", "mxfp4", "bf16", "nvfp4", "fp8", "int3", "mxfp4+h32", "int8+h32", "nvfp4+h128"]
    fmts = [parse_format(n) for n in names] + [parse_format("int4", group=32, symmetric=True)]
    together = gptq_levels(w, h, fmts)
    assert [level.format for level in together] == fmts
    for fmt, level in zip(fmts, together):
        assert_same_level(level, gptq_levels(w, h, [fmt])[0])


def test_gptq_on_identity_hessian_is_round_to_nearest():
    w, _ = layer(seed=1)
    fmts = [parse_format(n) for n in GPTQ_NAMES + ["nvfp4+h16", "bf16"]] + [parse_format("int3", 64, True)]
    for g, r in zip(gptq_levels(w, torch.eye(w.shape[1]), fmts), rtn_levels(w, fmts)):
        assert_same_level(g, r)


def uneven_layer(rows=32, cols=256, samples=2048, seed=7):
    """Correlated inputs whose channels differ in scale over about two decades, as activations do."""
    g = torch.Generator().manual_seed(seed)
    mix = 0.3 * torch.randn(cols, cols, generator=g) + torch.eye(cols)
    x = (torch.randn(samples, cols, generator=g) @ mix) * torch.exp(torch.randn(cols, generator=g))
    return torch.randn(rows, cols, generator=g), 2 * x.T @ x / samples


def test_act_order_lowers_the_error_on_uneven_channels():
    w, h = uneven_layer()
    fmts = [parse_format(n) for n in GPTQ_NAMES] + [parse_format("int3", 64, True)]
    plain, ordered = errors(w, h, gptq_levels(w, h, fmts)), errors(w, h, gptq_levels(w, h, fmts, act_order=True))
    for fmt, p, o in zip(fmts, plain, ordered):
        # a rotation evens out the channels, and with them what act-order has to gain
        assert o < (1.05 * p if fmt.rotation else p), (fmt.name, o, p)
    unrotated = [o / p for fmt, p, o in zip(fmts, plain, ordered) if not fmt.rotation]
    assert sum(unrotated) / len(unrotated) < 0.75, unrotated


def test_act_order_keeps_the_original_column_order():
    """With a diagonal Hessian there is no error feedback, so act-order (static groups, distinct
    H_jj: a real permutation) must give round-to-nearest's codes and params exactly: codes and
    group params come back in the original order."""
    w, _ = layer(seed=4)
    diag = torch.diag(torch.rand(w.shape[1], generator=torch.Generator().manual_seed(4)) + 0.1)
    fmts = [parse_format(n) for n in ["int2", "int4", "mxfp4", "nvfp4", "fp8", "bf16"]] + [parse_format("int3", 32, True)]
    for g, r in zip(gptq_levels(w, diag, fmts, act_order=True), rtn_levels(w, fmts)):
        assert_same_level(g, r)
    # stacked layers (q/k/v) under act-order equal separate sweeps
    w2, h = uneven_layer(rows=16)
    w1 = uneven_layer(rows=8, seed=8)[0]
    together = gptq_layers([w1, w2], h, fmts, act_order=True)
    for j, weight in enumerate([w1, w2]):
        for a, b in zip(together[j], gptq_levels(weight, h, fmts, act_order=True)):
            assert_same_level(a, b)


def test_hadamard_and_rotate():
    for n in ROTATIONS:
        hn = hadamard(n)
        assert torch.equal(hn.abs(), torch.full((n, n), n**-0.5))
        assert torch.equal(hn, hn.T)
        torch.testing.assert_close(hn @ hn.T, torch.eye(n), atol=1e-6, rtol=0)
    w = torch.randn(6, 256, generator=torch.Generator().manual_seed(6))
    for n in ROTATIONS:
        b = torch.block_diag(*[hadamard(n)] * (256 // n))
        torch.testing.assert_close(rotate(w, n), w @ b.T, atol=1e-5, rtol=0)
        torch.testing.assert_close(rotate(rotate(w, n), n), w, atol=1e-5, rtol=0)


def test_rotated_levels_are_in_the_original_basis():
    w, h = layer(seed=2)
    fmts = [parse_format(n) for n in ["int8+h32", "fp8+h16", "mxfp4", "mxfp4+h32", "nvfp4+h128"]]
    levels = gptq_levels(w, h, fmts)
    err = errors(w, h, levels)
    assert err[0] < 1e-4 and err[1] < 1e-3, err  # near-lossless levels are near w itself, not W·Bᵀ
    assert err[3] < 2 * err[2] and err[4] < 2 * err[2], err
    # the codes live in the rotated basis: decoding them there and rotating back is dequantize
    mx = levels[3]
    torch.testing.assert_close(rotate(decode_mxfp4(mx), 32), dequantize(mx, w), atol=1e-6, rtol=0)
    # round-to-nearest of a rotated level is round-to-nearest of the rotated weight
    rotated = rtn_levels(w, [parse_format("mxfp4+h32")])[0]
    plain = rtn_levels(rotate(w, 32), [parse_format("mxfp4")])[0]
    assert torch.equal(rotated.codes, plain.codes) and torch.equal(rotated.params["exp"], plain.params["exp"])


def test_dead_input_columns_come_out_as_zeros():
    dead = [0, 5, 130, 255]
    w, h = layer(seed=3, dead=dead)
    assert torch.equal(torch.diagonal(h)[dead], torch.zeros(4))
    fmts = [parse_format(n) for n in ["int2", "int4", "mxfp4", "nvfp4", "fp8"]] + [parse_format("int3", 32, True)]
    levels = gptq_levels(w, h, fmts)
    live = torch.ones(w.shape[1], dtype=torch.bool)
    live[dead] = False
    for level in levels:
        q = dequantize(level, w)
        assert torch.equal(q[:, dead], torch.zeros(w.shape[0], len(dead))), level.format.name
        assert (q[:, live] != 0).any()
    # the live columns still beat round-to-nearest
    for g, r in zip(errors(w, h, levels), errors(w, h, rtn_levels(w, fmts))):
        assert g < r


# 5. Determinism.

def test_two_calls_give_identical_levels():
    w, h = layer(seed=4)
    fmts = [parse_format(n) for n in GPTQ_NAMES + ["bf16"]]
    for first, second in zip(gptq_levels(w, h, fmts), gptq_levels(w.clone(), h.clone(), fmts)):
        assert_same_level(first, second)
    for first, second in zip(rtn_levels(w, fmts), rtn_levels(w.clone(), fmts)):
        assert_same_level(first, second)
