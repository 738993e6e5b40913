"""Load a causal LM and its tokenizer: the one place that holds `from_pretrained` arguments.

A local directory is checked before anything heavy runs (it exists, it holds a config, the
architecture has an adapter, its safetensors files are whole, it has a tokenizer when one is
needed), and so is the device, so a typo, an unsupported model, a broken download or a GPU flag
on a CPU machine fails in a second with the fix, not after minutes of reading weights.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

from safetensors import SafetensorError

from evopress.errors import ModelLoadError, RecipeError
from evopress.models.registry import check_supported

DTYPES = ("auto", "float32", "float16", "bfloat16")
DTYPE_ALIASES = {"fp32": "float32", "fp16": "float16", "half": "float16", "bf16": "bfloat16"}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")
WEIGHTS_FILE, WEIGHTS_INDEX = "model.safetensors", "model.safetensors.index.json"
DEVICE_FORMS = "auto, cpu, cuda, cuda:N (N a GPU index) or mps"
REFETCH = "re-download the model, or re-save it with save_pretrained"


def _looks_local(name: str) -> bool:
    # Hub ids are "name" or "org/name"; anything else that is not on disk was meant as a path.
    return name.startswith((".", "/", "~")) or "\\" in name or name.count("/") > 1


def _check_local(path: Path) -> None:
    if not path.exists():
        raise ModelLoadError(f"{path} does not exist; pass a model directory or a Hugging Face model name")
    if not (path / "config.json").is_file():
        raise ModelLoadError(
            f"{path} is not a model directory (no config.json); pass the folder that "
            "save_pretrained or an evopress export wrote"
        )


def _index_shards(index: Path) -> list[str]:
    """The shard files a sharded checkpoint's index names, each once, in the index's order."""
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
        return list(dict.fromkeys(weight_map.values()))
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise ModelLoadError(f"{index} is not a valid safetensors index ({err!r}); {REFETCH}") from err


def _safetensors_end(path: Path, size: int) -> int:
    """The size in bytes that `path`'s own header says the file has: 8 + header + data."""
    with path.open("rb") as f:
        head = f.read(8)
        header_len = int.from_bytes(head, "little")
        if len(head) < 8 or header_len > size - 8:
            raise ModelLoadError(f"{path} is truncated or corrupt ({size} bytes, too short for its header); {REFETCH}")
        try:
            header = json.loads(f.read(header_len))
            ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"]
        except (ValueError, KeyError, TypeError, IndexError, AttributeError) as err:
            raise ModelLoadError(f"{path} is corrupt (unreadable safetensors header: {err!r}); {REFETCH}") from err
    return 8 + header_len + max(ends, default=0)


def check_safetensors(path) -> None:
    """Refuse a truncated or corrupt safetensors file from its header and size alone.

    An interrupted download or copy otherwise surfaces as safetensors' "incomplete metadata"
    deep inside from_pretrained, which names neither the file nor the fix. Only the header is
    read, so this costs nothing next to loading the weights.
    """
    path = Path(path)
    size = path.stat().st_size
    expected = _safetensors_end(path, size)
    if size < expected:
        raise ModelLoadError(
            f"{path} is truncated ({size} bytes, its header describes {expected}); {REFETCH}")
    if size > expected:
        raise ModelLoadError(
            f"{path} is corrupt ({size - expected} bytes after the data its header describes); {REFETCH}")


def _check_weights(path: Path) -> None:
    # Checkpoints without safetensors files (.bin) are left to transformers, which names what it found.
    if (path / WEIGHTS_INDEX).is_file():
        shards = _index_shards(path / WEIGHTS_INDEX)
    elif (path / WEIGHTS_FILE).is_file():
        shards = [WEIGHTS_FILE]
    else:
        return
    missing = [s for s in shards if not (path / s).is_file()]
    if missing:
        raise ModelLoadError(
            f"{path} is missing the shard(s) {', '.join(missing)} that {WEIGHTS_INDEX} lists; "
            f"copy them from the original model or {REFETCH}")
    for shard in shards:
        check_safetensors(path / shard)


def _tokenizer_files(path: Path) -> list[str]:
    return [f for f in TOKENIZER_FILES if (path / f).is_file()]


def check_tokenizer(path) -> None:
    """Refuse a local model directory that holds no tokenizer files.

    Text data is tokenized with the model's own tokenizer; without one a run would fail only
    when it first tokenizes, after the weights are read, with an AttributeError on None.
    """
    path = Path(path)
    if not _tokenizer_files(path):
        raise ModelLoadError(
            f"{path} has no tokenizer: none of {', '.join(TOKENIZER_FILES)} is there; copy the tokenizer "
            "files from the original model's directory into it, or save the tokenizer there with "
            f"AutoTokenizer.from_pretrained(ORIGINAL_MODEL).save_pretrained({str(path)!r})")


def check_seq_len(config, seq_len: int) -> None:
    """Refuse a sequence length beyond the model's position embeddings, before any data is cut.

    Longer windows would run (rotary models extrapolate silently) but measure a model outside
    the range it was trained for, so every perplexity and KL would be meaningless.
    """
    if isinstance(config, dict):  # a config.json read as plain JSON
        limit = config.get("max_position_embeddings")
    else:  # getattr, not vars: configs map other names (GPT-2's n_positions) onto this one
        limit = getattr(config, "max_position_embeddings", None)
    if limit is not None and seq_len > limit:
        raise RecipeError(
            f"seq_len {seq_len} is longer than the model's max_position_embeddings {limit}; "
            f"pass a --seq-len at most {limit}")


def _check_cuda(device: str, index: str) -> None:
    import torch

    if not torch.cuda.is_available():
        raise ModelLoadError(
            f"device {device!r} needs CUDA, but CUDA is not available on this machine; "
            "pass --device cpu (or --device auto, which picks cuda when there is one)")
    count = torch.cuda.device_count()
    if index and int(index) >= count:
        raise ModelLoadError(
            f"device {device!r} does not exist: this machine has {count} CUDA device(s), "
            f"cuda:0 to cuda:{count - 1}; pass one of those, or --device auto")


def resolve_device(device: str) -> str:
    """The concrete device for `device` ("auto": cuda when there is one, else cpu), checked here.

    A GPU flag on a machine without that GPU, or a typo, otherwise fails inside torch once the
    weights are read; here it fails at once and says which devices this machine has.
    """
    import torch

    device = str(device).strip().lower()
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return device
    if device == "mps":
        if not torch.backends.mps.is_available():
            raise ModelLoadError("device 'mps' needs an Apple GPU, which this machine does not have; "
                                 "pass --device cpu (or auto)")
        return device
    kind, colon, index = device.partition(":")
    if kind != "cuda" or (colon and not index.isdigit()):
        raise ModelLoadError(f"unknown device {device!r}; use one of {DEVICE_FORMS}")
    _check_cuda(device, index)
    return device


def _torch_dtype(dtype):
    import torch

    if dtype == "auto" or isinstance(dtype, torch.dtype):
        return dtype
    dtype = DTYPE_ALIASES.get(dtype, dtype)
    if dtype not in DTYPES:
        raise ModelLoadError(f"unknown dtype {dtype!r}; use one of {', '.join(DTYPES)}")
    return getattr(torch, dtype)


def _model_type(name: str, local: bool) -> str | None:
    # A local config is read as plain JSON, so a model_type transformers cannot build without
    # remote code (an exported nemotron-nas model) still gets the "unsupported" explanation.
    if local:
        try:
            return json.loads((Path(name) / "config.json").read_text()).get("model_type")
        except ValueError as err:
            raise ModelLoadError(f"{name}/config.json is not valid JSON ({err}); re-save the model") from err
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(name).model_type
    except (OSError, ValueError) as err:
        raise ModelLoadError(
            f"cannot read a model config for {name!r} ({err}); check the name, or download the model "
            "and pass its local directory (offline machines need a local path)"
        ) from err


def _load_tokenizer(name: str, local: bool, required: bool):
    from transformers import AutoTokenizer

    if local and not _tokenizer_files(Path(name)):
        if required:
            check_tokenizer(name)
        return None
    try:
        return AutoTokenizer.from_pretrained(name)
    except (OSError, ValueError) as err:
        found = f" (it holds {', '.join(_tokenizer_files(Path(name)))})" if local else ""
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelLoadError(
            f"cannot load the tokenizer of {name!r}{found}: {reason}; copy all tokenizer files "
            "(tokenizer.json, tokenizer_config.json, ...) from the original model, or save the tokenizer "
            "with AutoTokenizer.from_pretrained(ORIGINAL_MODEL).save_pretrained(DIR)") from err


def _placement(device) -> tuple[str, bool]:
    """(device, has_accelerate): "auto" stays "auto" (spread over GPUs) only where there are GPUs."""
    import torch

    has_accelerate = importlib.util.find_spec("accelerate") is not None
    device = str(device).strip().lower()
    if device == "auto" and torch.cuda.is_available():
        if not has_accelerate:
            raise ModelLoadError('device="auto" needs the accelerate package: pip install accelerate')
        return device, has_accelerate
    return resolve_device(device), has_accelerate


def load_model(path_or_name, dtype="auto", device="cpu", require_tokenizer=False):
    """(model, tokenizer) in eval mode; tokenizer is None for a directory without one.

    dtype: "auto" (as stored), "float32", "float16", "bfloat16" (or fp32, fp16, bf16) or a torch.dtype.
    device: "cpu", "cuda", "cuda:1", "mps", ... or "auto" to spread a large model over all GPUs
    (on a machine without CUDA "auto" is the CPU).
    require_tokenizer: refuse a directory without tokenizer files (callers that tokenize text)
    instead of returning None for the tokenizer.
    Everything that can be checked cheaply (path, config, architecture, device, safetensors
    files, tokenizer) is checked before the weights are read.
    """
    from transformers import AutoModelForCausalLM

    name = os.fspath(path_or_name)
    local = Path(name).expanduser().exists() or _looks_local(name)
    if local:
        name = str(Path(name).expanduser())
        _check_local(Path(name))
    check_supported(_model_type(name, local))
    kwargs = {"dtype": _torch_dtype(dtype)}
    device, has_accelerate = _placement(device)
    if local:
        _check_weights(Path(name))
    tokenizer = _load_tokenizer(name, local, require_tokenizer)
    if has_accelerate:
        kwargs["device_map"] = device  # place weights while reading, not after
    try:
        model = AutoModelForCausalLM.from_pretrained(name, **kwargs)
    except (OSError, SafetensorError) as err:
        raise ModelLoadError(f"cannot load the weights of {name!r}: {err}; {REFETCH}") from err
    if not has_accelerate:
        model.to(device)
    model.eval()
    return model, tokenizer
