"""llama.cpp's own quantizers as levels: the bytes a GGUF search picks are the bytes llama.cpp writes.

A GGUF level of a weight is a ggml tensor type (`TYPES`, named as llama.cpp names them: "q4_k",
"q8_0", "f16"). Each level is computed by llama.cpp's compiled library, not re-implemented here:
`quantize` calls ggml's `ggml_quantize_chunk` (the function `llama-quantize` calls per row chunk)
through ctypes, so the search scores exactly the tensors the exported file will hold and
llama.cpp will compute with. `llama_mix` runs llama.cpp's whole quantizer on a GGUF file, which
gives its hand-written per-tensor mixes ("Q4_K_M", ...) as the baseline.

The library is the one llama-cpp-python installed (`pip install evopress[gguf]` compiles it); it is
found and loaded on first use, so importing this module needs neither it nor `gguf`. The size
table below is plain data, so byte costs (`row_bytes`, `tensor_bytes`) need no library at all;
on load the library's own `ggml_blck_size`, `ggml_type_size` and `ggml_type_name` are checked
against it, so a llama.cpp that renumbers or resizes a type fails loudly instead of writing wrong
bytes (ggml aborts the process on a bad call, so every argument is checked here first), and a
type an older build lacks is an error naming the upgrade.

`dequantize` decodes with the `gguf` package (pure numpy, no compiled code, so a stored level can
be decoded on any machine); `ggml_dequantize` is ggml's own `to_float`, and the tests check that
the two agree bit for bit on every type.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import logging
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from evopress.errors import ExportError, ModelLoadError, RecipeError

INSTALL_HINT = "pip install evopress[gguf]  (installs llama-cpp-python, which compiles llama.cpp, and gguf)"


@dataclass(frozen=True)
class GGMLType:
    """One ggml tensor type: its enum value and how a row of it is laid out.

    ggml stores a matrix row by row, each row as `cols / block` blocks of `block_bytes` bytes,
    so a row's width must be a multiple of `block` and its size is exact."""

    name: str  # llama.cpp's ggml_type_name, lower case
    id: int  # enum ggml_type
    block: int  # values per block
    block_bytes: int  # bytes per block

    @property
    def bits(self) -> float:
        """Bits per weight, scales included."""
        return 8 * self.block_bytes / self.block


# The types offered as levels. The IQ types are left out: llama.cpp quantizes them only with an
# importance matrix and they cost a grid search per block; q4_0/q4_1/q5_0/q5_1/q8_0/mxfp4 have
# blocks of 32, the k-quants of 256 (QK_K). Values are ggml.h's enum and sizeof(block_*).
TYPES: dict[str, GGMLType] = {t.name: t for t in (
    GGMLType("f32", 0, 1, 4),
    GGMLType("f16", 1, 1, 2),
    GGMLType("bf16", 30, 1, 2),
    GGMLType("q8_0", 8, 32, 34),
    GGMLType("q6_k", 14, 256, 210),
    GGMLType("q5_k", 13, 256, 176),
    GGMLType("q5_0", 6, 32, 22),
    GGMLType("q5_1", 7, 32, 24),
    GGMLType("q4_k", 12, 256, 144),
    GGMLType("q4_0", 2, 32, 18),
    GGMLType("q4_1", 3, 32, 20),
    GGMLType("q3_k", 11, 256, 110),
    GGMLType("q2_k", 10, 256, 84),
    GGMLType("mxfp4", 39, 32, 17),
)}

# llama.cpp's file types (`llama-quantize MODEL OUT Q4_K_M`) that `llama_mix` runs; each names
# a LLAMA_FTYPE_MOSTLY_* constant of llama_cpp.
MIXES = ("Q2_K", "Q3_K_S", "Q3_K_M", "Q3_K_L", "Q4_0", "Q4_K_S", "Q4_K_M", "Q5_K_S", "Q5_K_M", "Q6_K", "Q8_0")


# ---------------------------------------------------------------------------------------------
# The table: names, sizes, shapes (no library needed)
# ---------------------------------------------------------------------------------------------

def parse_type(name: str) -> str:
    """The canonical (lower-case) name of a ggml type given in any case ("Q4_K" -> "q4_k")."""
    key = str(name).strip().lower()
    if key not in TYPES:
        raise RecipeError(f"unknown GGUF tensor type {name!r}; known: {', '.join(TYPES)} "
                          "(the IQ types are not offered: llama.cpp needs an importance matrix for them)")
    return key


def spec(name: str) -> GGMLType:
    """The table entry of a type name (any case)."""
    return TYPES[parse_type(name)]


def check_shape(type: str, rows: int, cols: int, name: str) -> None:
    """Fail early, naming the tensor, when its rows do not split into the type's blocks.

    llama.cpp itself would silently fall back to another type for such a tensor (and ggml would
    abort the process if asked directly), so a level that cannot hold it is a recipe error."""
    t = spec(type)
    if rows <= 0 or cols <= 0:
        raise RecipeError(f"{name}: shape [{rows}, {cols}] is empty; a GGUF tensor needs at least one value")
    if cols % t.block:
        fits = [n for n, s in TYPES.items() if cols % s.block == 0]
        raise RecipeError(f"{name} has rows of {cols} values, which do not split into {t.name}'s blocks of "
                          f"{t.block}; types that fit this width: {', '.join(fits)}")


def row_bytes(type: str, cols: int) -> int:
    """Bytes of one row of `cols` values in this type (the width must be a whole number of blocks)."""
    t = spec(type)
    check_shape(t.name, 1, cols, "a row")
    return cols // t.block * t.block_bytes


def tensor_bytes(type: str, rows: int, cols: int) -> int:
    """Exact data bytes of a [rows, cols] matrix in this type (GGUF's alignment padding excluded)."""
    check_shape(type, rows, cols, "a tensor")
    return rows * row_bytes(type, cols)


# ---------------------------------------------------------------------------------------------
# The library: found, loaded and checked once
# ---------------------------------------------------------------------------------------------

_LIB: ctypes.CDLL | None = None
_AVAILABLE: frozenset[str] = frozenset()  # the table's types this build has


class _TypeTraits(ctypes.Structure):
    """ggml.h's `struct ggml_type_traits` (read only for `to_float`, after checking its fields)."""

    _fields_ = [("type_name", ctypes.c_char_p), ("blck_size", ctypes.c_int64),
                ("blck_size_interleave", ctypes.c_int64), ("type_size", ctypes.c_size_t),
                ("is_quantized", ctypes.c_bool), ("to_float", ctypes.c_void_p),
                ("from_float_ref", ctypes.c_void_p)]


_TO_FLOAT = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)


def _library_dirs() -> list[Path]:
    """Where llama-cpp-python keeps its compiled libraries (LLAMA_CPP_LIB_PATH wins, as it does there)."""
    override = os.environ.get("LLAMA_CPP_LIB_PATH")
    if override:
        return [Path(override)]
    found = importlib.util.find_spec("llama_cpp")
    if found is None or not found.submodule_search_locations:
        raise ExportError(f"GGUF levels need llama.cpp's quantizers, from llama-cpp-python, which is not "
                          f"installed; run: {INSTALL_HINT}")
    package = Path(next(iter(found.submodule_search_locations)))
    return [package / "lib", package]


def _candidates(dirs: list[Path]) -> list[Path]:
    """Library files that may hold ggml's quantizers, most likely first.

    Recent builds put them in libggml-base; older ones linked everything into libggml or libllama."""
    suffixes = {"linux": ".so*", "darwin": ".*dylib", "win32": ".dll"}
    suffix = next((s for p, s in suffixes.items() if sys.platform.startswith(p)), ".so*")
    seen, out = set(), []
    for stem in ("ggml-base", "ggml", "llama"):
        for d in dirs:
            for prefix in ("lib", ""):
                for path in sorted(d.glob(f"{prefix}{stem}{suffix}")):
                    real = path.resolve()
                    if real not in seen:
                        seen.add(real)
                        out.append(path)
    return out


def _bind(lib: ctypes.CDLL) -> ctypes.CDLL:
    """Declare the C signatures (ggml.h) of the functions used here."""
    lib.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                        ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
    lib.ggml_quantize_chunk.restype = ctypes.c_size_t
    lib.ggml_quantize_requires_imatrix.argtypes = [ctypes.c_int]
    lib.ggml_quantize_requires_imatrix.restype = ctypes.c_bool
    lib.ggml_blck_size.argtypes = [ctypes.c_int]
    lib.ggml_blck_size.restype = ctypes.c_int64
    lib.ggml_type_size.argtypes = [ctypes.c_int]
    lib.ggml_type_size.restype = ctypes.c_size_t
    lib.ggml_type_name.argtypes = [ctypes.c_int]
    lib.ggml_type_name.restype = ctypes.c_char_p
    lib.ggml_get_type_traits.argtypes = [ctypes.c_int]
    lib.ggml_get_type_traits.restype = ctypes.POINTER(_TypeTraits)
    return lib


def _matching_types(lib: ctypes.CDLL) -> frozenset[str]:
    """The table's types this build has with the same enum value, block and block size.

    The name is asked first: ggml_type_name is bounds-checked ("NONE" past the last type of an
    older build), ggml_blck_size is not. A type whose value names another type means the enum
    was renumbered, and then no value here can be trusted."""
    found = set()
    for t in TYPES.values():
        name = (lib.ggml_type_name(t.id) or b"").decode().lower()
        if name == "none":
            continue
        if name != t.name or (lib.ggml_blck_size(t.id), lib.ggml_type_size(t.id)) != (t.block, t.block_bytes):
            raise ExportError(f"this llama.cpp has ggml type {t.id} as {name!r} (block {lib.ggml_blck_size(t.id)}, "
                              f"{lib.ggml_type_size(t.id)} bytes), not {t.name} (block {t.block}, {t.block_bytes} "
                              f"bytes): evopress's GGUF table does not match it; reinstall: {INSTALL_HINT}")
        found.add(t.name)
    return frozenset(found)


def library() -> ctypes.CDLL:
    """ggml's compiled library from llama-cpp-python, loaded and checked on first use."""
    global _LIB, _AVAILABLE
    if _LIB is None:
        dirs = _library_dirs()
        for path in _candidates(dirs):
            try:
                lib = ctypes.CDLL(str(path))
            except OSError:
                continue
            if hasattr(lib, "ggml_quantize_chunk"):
                _AVAILABLE = _matching_types(_bind(lib))
                _LIB = lib
                break
        else:
            raise ExportError(f"no llama.cpp library with ggml_quantize_chunk under {', '.join(map(str, dirs))}; "
                              f"reinstall llama-cpp-python: {INSTALL_HINT}")
    return _LIB


def _library_for(t: GGMLType) -> ctypes.CDLL:
    """The library, if it has this type (an older llama.cpp may lack a newer one, e.g. mxfp4)."""
    lib = library()
    if t.name not in _AVAILABLE:
        raise ExportError(f"this llama.cpp has no ggml type {t.name}; upgrade llama-cpp-python "
                          f"(pip install -U llama-cpp-python) or choose another level")
    return lib


def gguf_package():
    """The `gguf` package (decoding and reading files), with the install hint when it is missing."""
    try:
        import gguf
    except ImportError as e:
        raise ExportError(f"GGUF support needs the gguf package; run: {INSTALL_HINT}") from e
    return gguf


# ---------------------------------------------------------------------------------------------
# Quantize and decode
# ---------------------------------------------------------------------------------------------

def _matrix(weight: np.ndarray, name: str) -> np.ndarray:
    """The weight as ggml reads it: 2-D, float32, C-contiguous, finite."""
    w = np.asarray(weight)
    if w.ndim != 2:
        raise RecipeError(f"{name}: ggml quantizes a matrix [rows, cols], got shape {list(w.shape)}")
    w = np.ascontiguousarray(w, dtype=np.float32)
    if not np.isfinite(w).all():
        raise ExportError(f"{name} has non-finite values; llama.cpp would write unusable blocks for them")
    return w


def _importance(imatrix: np.ndarray | None, cols: int, name: str) -> np.ndarray | None:
    """An importance matrix as ggml reads it: one finite, non-negative float32 per input column."""
    if imatrix is None:
        return None
    m = np.ascontiguousarray(np.asarray(imatrix, dtype=np.float32).reshape(-1))
    if m.size != cols:
        raise RecipeError(f"{name}: the importance matrix has {m.size} values, but the weight has {cols} columns")
    if not np.isfinite(m).all() or (m < 0).any():
        raise RecipeError(f"{name}: the importance matrix must be finite and non-negative (mean squared activations)")
    return m


def _row_ranges(rows: int, parts: int) -> list[tuple[int, int]]:
    """`parts` contiguous row ranges covering [0, rows); ggml quantizes every row on its own."""
    bounds = np.linspace(0, rows, max(1, min(parts, rows)) + 1).astype(int)
    return [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


def quantize(weight: np.ndarray, type: str, imatrix: np.ndarray | None = None, threads: int = 1,
             name: str = "weight") -> np.ndarray:
    """`weight` [rows, cols] in ggml type `type`, by llama.cpp's own quantizer: uint8 [rows, row bytes].

    `imatrix` is llama.cpp's importance matrix for this weight: per input column, the mean of the
    squared activations (only its relative values matter). The k-quants and q4_0/q4_1/q5_0/q5_1
    then minimise the importance-weighted error, as `llama-quantize --imatrix` does; q8_0,
    mxfp4 and the float types ignore it, also as in llama.cpp. None gives plain quantization,
    byte for byte what `llama-quantize` writes without an imatrix. Rows are independent, so
    `threads` > 1 (row ranges in parallel; ctypes releases the GIL) gives the same bytes."""
    t = spec(type)
    w = _matrix(weight, name)
    rows, cols = w.shape
    check_shape(t.name, rows, cols, name)
    imat = _importance(imatrix, cols, name)
    lib = _library_for(t)
    if imat is None and lib.ggml_quantize_requires_imatrix(t.id):
        raise RecipeError(f"{name}: llama.cpp quantizes {t.name} only with an importance matrix")
    out = np.empty((rows, row_bytes(t.name, cols)), dtype=np.uint8)

    def run(span: tuple[int, int]) -> int:
        start, stop = span
        return lib.ggml_quantize_chunk(t.id, w.ctypes.data, out.ctypes.data, start * cols, stop - start, cols,
                                       None if imat is None else imat.ctypes.data)

    spans = _row_ranges(rows, threads)
    if len(spans) > 1:
        with ThreadPoolExecutor(len(spans)) as pool:
            written = sum(pool.map(run, spans))
    else:
        written = run(spans[0])
    if written != out.size:
        raise ExportError(f"{name}: llama.cpp wrote {written} bytes of {t.name}, expected {out.size}")
    return out


def _blocks(data: np.ndarray, type: str, cols: int) -> tuple[GGMLType, np.ndarray]:
    """Check quantized rows against their type and width."""
    t = spec(type)
    d = np.asarray(data)
    width = row_bytes(t.name, cols)
    if d.dtype != np.uint8 or d.ndim != 2 or d.shape[1] != width:
        raise RecipeError(f"{t.name} rows of {cols} values are uint8 [rows, {width}], got {d.dtype} {list(d.shape)}")
    return t, np.ascontiguousarray(d)


def dequantize(data: np.ndarray, type: str, cols: int) -> np.ndarray:
    """The float32 [rows, cols] values that quantized rows `data` (uint8 [rows, row bytes]) stand for.

    Decoded by the `gguf` package's numpy code, which needs no compiled library; it equals ggml's
    own `to_float` bit for bit (`ggml_dequantize`, checked by the tests)."""
    t, d = _blocks(data, type, cols)
    if t.name == "f32":
        return d.view(np.float32).copy()
    gguf = gguf_package()
    values = gguf.quants.dequantize(d, gguf.GGMLQuantizationType(t.id))
    return np.ascontiguousarray(values, dtype=np.float32).reshape(d.shape[0], cols)


def ggml_dequantize(data: np.ndarray, type: str, cols: int) -> np.ndarray:
    """`dequantize` by ggml's own C `to_float` (the reference llama.cpp's CPU code decodes with)."""
    t, d = _blocks(data, type, cols)
    if t.name == "f32":
        return d.view(np.float32).copy()
    lib = _library_for(t)
    traits = lib.ggml_get_type_traits(t.id).contents
    if (traits.type_name or b"").decode().lower() != t.name or traits.blck_size != t.block or not traits.to_float:
        raise ExportError(f"this llama.cpp's ggml_type_traits for {t.name} has another layout; use dequantize()")
    out = np.empty((d.shape[0], cols), dtype=np.float32)
    _TO_FLOAT(traits.to_float)(d.ctypes.data, out.ctypes.data, out.size)
    return out


# ---------------------------------------------------------------------------------------------
# llama.cpp's own mixes
# ---------------------------------------------------------------------------------------------

def parse_mix(ftype: str) -> str:
    """The canonical name of a llama.cpp file type ("q4_k_m" -> "Q4_K_M")."""
    key = str(ftype).strip().upper()
    if key not in MIXES:
        raise RecipeError(f"unknown llama.cpp mix {ftype!r}; known: {', '.join(MIXES)}")
    return key


def _llama_cpp():
    """llama-cpp-python's bindings of libllama, with the install hint when it is missing."""
    try:
        import llama_cpp
    except ImportError as e:
        raise ExportError(f"llama.cpp's mixes need llama-cpp-python; run: {INSTALL_HINT}") from e
    return llama_cpp


def tensor_types(path: str | os.PathLike) -> dict[str, str]:
    """GGUF tensor name -> ggml type name (lower case) of every tensor in a GGUF file."""
    reader = gguf_package().GGUFReader(str(path))
    return {t.name: t.tensor_type.name.lower() for t in reader.tensors}


@contextlib.contextmanager
def _llama_log(verbose: bool):
    """llama-cpp-python prints llama.cpp's log when its logger "llama-cpp-python" lets it; unless
    `verbose`, the call hides the info lines (one per tensor). llama-cpp-python maps llama.cpp's
    warnings (a type's fallback for a width) to ERROR, so those show, as do real errors."""
    logger = logging.getLogger("llama-cpp-python")
    level = logger.level
    if not verbose:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def llama_mix(src_gguf: str | os.PathLike, ftype: str, out: str | os.PathLike, threads: int = 2,
              verbose: bool = False) -> dict[str, str]:
    """Run llama.cpp's quantizer (`llama-quantize SRC OUT FTYPE`) and return the type it chose per tensor.

    `src_gguf` must hold float tensors (f32, f16 or bf16): llama.cpp does not requantize. The
    mix is llama.cpp's own rules (more bits for attn_v, some ffn_down and output.weight, a
    fallback where a width does not fit a type's blocks), with no importance matrix, so every
    quantized tensor in `out` equals `quantize(its f32 values, its type)`. `out` is written
    whole or not at all."""
    src, dst = Path(src_gguf), Path(out)
    mix = parse_mix(ftype)
    if not src.is_file():
        raise ModelLoadError(f"no GGUF file at {src}; write the model's f32 GGUF first")
    lcpp = _llama_cpp()
    params = lcpp.llama_model_quantize_default_params()
    params.ftype = getattr(lcpp, f"LLAMA_FTYPE_MOSTLY_{mix}")
    params.nthread = max(1, int(threads))
    dst.parent.mkdir(parents=True, exist_ok=True)
    part = dst.with_name(dst.name + ".part")
    try:
        with _llama_log(verbose):
            status = lcpp.llama_model_quantize(str(src).encode(), str(part).encode(), ctypes.byref(params))
        if status != 0 or not part.is_file():
            raise ExportError(f"llama.cpp could not quantize {src} to {mix} (status {status}; its error above says "
                              "why); the source must be a llama.cpp-loadable GGUF with f32/f16/bf16 tensors")
        os.replace(part, dst)
    finally:
        part.unlink(missing_ok=True)
    return tensor_types(dst)
