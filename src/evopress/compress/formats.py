"""Number formats as data: what a quantization level is, what it costs, and how values round to it.

A level of a linear layer is a `Format`, named as on the command line:

    int2 .. int8     integers with one fp16 scale (and, asymmetric, one integer zero) per group of
                     `group` input columns (default 128; GPTQ, Frantar et al. 2022)
    mxfp4            FP4 E2M1 values, one E8M0 (power-of-two) scale per 32 (OCP MX v1.0)
    nvfp4            FP4 E2M1 values, one FP8 E4M3 scale per 16 and one FP32 scale per tensor
    fp8              FP8 E4M3 values, one scale per output channel
    bf16             kept as it is
    LEVEL+hN         LEVEL on the weights rotated by a block Hadamard transform of size N
                     (16, 32 or 128), e.g. "mxfp4+h32": rotation decided per layer by the search

`Format.bits(rows, cols)` is a level's exact size in bits, codes, scales, zeros and per-tensor
scales included, in the minimal layout; an exporter adds what its layout carries besides (GPTQ's
`g_idx`). Rounding is written once per family (`Grid`): scales fitted to a group of columns, then
each column rounded with them, which is what GPTQ's sweep needs (`compress.gptq`). Codes are
integers (uint8) and params are exactly representable in their stored dtypes (`Grid.stored`), and
`dequantize` is the one way back to values, so a store that keeps codes and params re-derives the
same weights bit for bit.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass, replace

import torch

from evopress.errors import RecipeError

E2M1 = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)  # FP4 magnitudes by their 3-bit code
E4M3_MAX, E2M1_MAX = 448.0, 6.0
ROTATIONS = (16, 32, 128)


@dataclass(frozen=True)
class Format:
    kind: str  # "int" | "mxfp4" | "nvfp4" | "fp8" | "bf16"
    bits: int  # bits of one code
    group: int  # input columns per scale (0: one scale per output channel; bf16: none)
    symmetric: bool = True
    rotation: int = 0  # block Hadamard size, 0: none

    @property
    def name(self) -> str:
        base = f"int{self.bits}" if self.kind == "int" else self.kind
        return base + (f"+h{self.rotation}" if self.rotation else "")

    def size(self, rows: int, cols: int) -> int:
        """Exact bits of a [rows, cols] weight in this format, everything needed to decode it included."""
        n = rows * cols
        if self.kind == "bf16":
            return 16 * n
        groups = rows * math.ceil(cols / self.group) if self.group else rows
        if self.kind == "int":
            return n * self.bits + groups * (16 + (0 if self.symmetric else self.bits))
        if self.kind == "mxfp4":
            return n * 4 + groups * 8
        if self.kind == "nvfp4":
            return n * 4 + groups * 8 + 32
        if self.kind == "fp8":
            return n * 8 + groups * 32
        raise ValueError(self.kind)

    def bits_per_weight(self, rows: int, cols: int) -> float:
        return self.size(rows, cols) / (rows * cols)


def parse_format(name: str, group: int = 128, symmetric: bool = False) -> Format:
    """The `Format` a level name means; `group` and `symmetric` apply to the integer levels."""
    m = re.fullmatch(r"(int([2-8])|mxfp4|nvfp4|fp8|bf16)(?:\+h(\d+))?", name.strip().lower())
    if not m:
        raise RecipeError(f"unknown quantization level {name!r}: give int2..int8, mxfp4, nvfp4, fp8 or bf16, "
                          "optionally with a rotation suffix +h16, +h32 or +h128 (e.g. mxfp4+h32)")
    rotation = int(m.group(3) or 0)
    if m.group(3) is not None and rotation not in ROTATIONS:
        raise RecipeError(f"level {name!r}: rotation size {rotation} is not one of {ROTATIONS}")
    if m.group(2):
        fmt = Format("int", int(m.group(2)), group, symmetric)
    else:
        fmt = {"mxfp4": Format("mxfp4", 4, 32), "nvfp4": Format("nvfp4", 4, 16),
               "fp8": Format("fp8", 8, 0), "bf16": Format("bf16", 16, 0)}[m.group(1)]
    if rotation and fmt.kind == "bf16":
        raise RecipeError("bf16 keeps the weight as it is; a rotation suffix means nothing on it")
    return replace(fmt, rotation=rotation)


def check_shape(fmt: Format, rows: int, cols: int, name: str) -> None:
    """Refuse a layer the format cannot tile (groups and rotation blocks must divide the columns)."""
    for what, size in (("group", fmt.group), ("rotation block", fmt.rotation)):
        if size and cols % size:
            raise RecipeError(f"{name}: {cols} input columns are not a multiple of {fmt.name}'s {what} size {size}; "
                              "leave this level out (--levels) or choose another group size")


# Rounding. Each family quantizes a stack of levels at once: x is [levels, rows, ...].

class Grid:
    """How values of one family round: `fit` scales to a group, `encode` a column, `decode` it back.

    `stored` names each param's dtype on disk (and an offset added before the cast); every value
    `fit` returns is exact in it, so stored params decode to the very same weights."""

    stored: dict = {}

    def __init__(self, formats: list[Format]):
        self.formats = formats

    def prepare(self, weight: torch.Tensor, segments: list[int] | None = None) -> dict:
        """Per-tensor parameters from the whole original weight (only NVFP4 has one); with
        `segments` (row counts of layers stacked along the rows) one per layer, given per row."""
        return {}

    def fit(self, x: torch.Tensor, tensor: dict) -> dict:
        """Scale parameters ([levels, rows] each) for the group of columns x [levels, rows, width];
        `encode` and `decode` get them merged with the per-tensor ones of `prepare`."""
        raise NotImplementedError

    def encode(self, x: torch.Tensor, p: dict) -> torch.Tensor:
        """Codes (uint8) of the column x [levels, rows]."""
        raise NotImplementedError

    def decode(self, codes: torch.Tensor, p: dict) -> torch.Tensor:
        """Values (float32) of codes [levels, rows, ...] with params broadcast along the trailing dims."""
        raise NotImplementedError


class IntGrid(Grid):
    """Min-max integer grids, dynamic per group (the GPTQ reference's quantizer), several widths at once."""

    def __init__(self, formats):
        super().__init__(formats)
        self.symmetric = formats[0].symmetric
        self.widths = tuple(f.bits for f in formats)

    stored = {"scale": (torch.float16, 0), "zero": (torch.uint8, 0)}

    def fit(self, x, tensor):
        maxq = _maxq(self.widths, x.device)
        lo = x.amin(dim=-1).clamp(max=0)
        hi = x.amax(dim=-1).clamp(min=0)
        if self.symmetric:
            hi = torch.maximum(-lo, hi)
            lo = -hi
        scale = ((hi - lo) / maxq).half().float()  # stored as fp16: decode with exactly what is stored
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        if self.symmetric:
            zero = ((maxq + 1) / 2).expand_as(scale)
        else:
            zero = torch.minimum(torch.round(-lo / scale).clamp(min=0), maxq)
        return {"scale": scale, "zero": zero}

    def encode(self, x, p):
        maxq = _maxq(self.widths, x.device)
        q = torch.round(x / p["scale"]) + p["zero"]
        return torch.minimum(q.clamp(min=0), maxq).to(torch.uint8)

    def decode(self, codes, p):
        return p["scale"] * (codes.float() - p["zero"])


@functools.cache
def _maxq(widths: tuple[int, ...], device) -> torch.Tensor:
    """[levels, 1] largest code per width, made once per device (a copy per column would wait on it)."""
    return torch.tensor([2.0 ** b - 1 for b in widths], device=device).view(-1, 1)


@functools.cache
def _e2m1_tables(device) -> tuple[torch.Tensor, torch.Tensor]:
    """(rounding bounds, magnitudes) of E2M1 on `device`. The bounds are the midpoints between
    neighbours; a tie goes to the even code: down at 0.25, 1.25, 2.5 and 5, up at 0.75, 1.75 and 3.5
    (those bounds sit one float below the midpoint, so the midpoint itself rounds up)."""
    mid = torch.tensor([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0], device=device)
    up = torch.tensor([False, True, False, True, False, True, False], device=device)
    return torch.where(up, torch.nextafter(mid, torch.zeros_like(mid)), mid), torch.tensor(E2M1, device=device)


def e2m1_encode(v: torch.Tensor) -> torch.Tensor:
    """4-bit codes (sign << 3 | magnitude code) of v rounded to E2M1, nearest, ties to the even code,
    saturating at ±6."""
    bounds, _ = _e2m1_tables(v.device)
    mag = torch.bucketize(v.abs(), bounds, right=False)
    return (mag | ((v < 0) & (mag > 0)).to(mag.dtype) << 3).to(torch.uint8)


def e2m1_decode(codes: torch.Tensor) -> torch.Tensor:
    _, table = _e2m1_tables(codes.device)
    mag = table[(codes & 7).long()]
    return torch.where((codes & 8) != 0, -mag, mag)


def e4m3(x: torch.Tensor) -> torch.Tensor:
    """x rounded to FP8 E4M3 (saturating at 448), as float32."""
    return x.clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn).float()


class MXFP4Grid(Grid):
    """OCP MX: the shared scale is 2^(floor(log2 amax) - 2), 2 being E2M1's largest exponent."""

    stored = {"exp": (torch.uint8, 127)}  # the E8M0 byte

    def fit(self, x, tensor):
        amax = x.abs().amax(dim=-1)
        # floor(log2 amax) - 2, exactly: frexp gives amax = m·2^e with m in [0.5, 1) (log2 in float32
        # rounds up just below a power of two)
        exp = torch.frexp(amax).exponent.float() - 3
        return {"exp": torch.where(amax > 0, exp, torch.full_like(exp, -127)).clamp(-127, 127)}

    def encode(self, x, p):
        return e2m1_encode(x / torch.exp2(p["exp"]))

    def decode(self, codes, p):
        return torch.exp2(p["exp"]) * e2m1_decode(codes)


class NVFP4Grid(Grid):
    """NVFP4: block scales amax/6 in E4M3, relative to one FP32 global scale per tensor, 448·6/amax
    (compressed-tensors' convention: values are codes · block / global)."""

    stored = {"block": (torch.float8_e4m3fn, 0), "global": (torch.float32, 0)}

    def prepare(self, weight, segments=None):
        parts = weight.split(segments) if segments else [weight]
        amax = torch.stack([part.abs().amax() for part in parts]).float()
        scale = torch.where(amax > 0, (E4M3_MAX * E2M1_MAX) / amax, torch.ones_like(amax))
        if not segments:
            return {"global": scale[0]}
        return {"global": scale.repeat_interleave(torch.tensor(segments, device=weight.device))}

    def fit(self, x, tensor):
        return {"block": e4m3(x.abs().amax(dim=-1) / E2M1_MAX * tensor["global"])}

    def encode(self, x, p):
        scale = p["block"] / p["global"]
        return e2m1_encode(x / torch.where(scale > 0, scale, torch.ones_like(scale)))

    def decode(self, codes, p):
        return (p["block"] / p["global"]) * e2m1_decode(codes)


class FP8Grid(Grid):
    """FP8 E4M3 with one fp32 scale per output channel, amax/448."""

    stored = {"scale": (torch.float32, 0)}

    def fit(self, x, tensor):
        amax = x.abs().amax(dim=-1)
        return {"scale": torch.where(amax > 0, amax / E4M3_MAX, torch.ones_like(amax))}

    def encode(self, x, p):
        return e4m3(x / p["scale"]).to(torch.float8_e4m3fn).view(torch.uint8)

    def decode(self, codes, p):
        return p["scale"] * codes.view(torch.float8_e4m3fn).float()


GRIDS = {"int": IntGrid, "mxfp4": MXFP4Grid, "nvfp4": NVFP4Grid, "fp8": FP8Grid}


def hadamard(n: int, device=None) -> torch.Tensor:
    """The orthonormal n×n Hadamard matrix (Sylvester's construction; n a power of two)."""
    h = torch.ones(1, 1, device=device)
    while h.shape[0] < n:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return h / math.sqrt(n)


def rotate(weight: torch.Tensor, size: int) -> torch.Tensor:
    """W·Bᵀ for the block-diagonal Hadamard B of block `size` along the input columns (B is symmetric
    and orthonormal, so W x = (W Bᵀ)(B x) and rotating back is the same product)."""
    rows, cols = weight.shape[-2:]
    h = hadamard(size, weight.device).to(weight.dtype)
    return (weight.reshape(*weight.shape[:-1], cols // size, size) @ h).reshape(weight.shape)
