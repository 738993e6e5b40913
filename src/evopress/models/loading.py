"""Load a causal LM and its tokenizer: the one place that holds `from_pretrained` arguments.

A local directory is checked before anything heavy runs (it exists, it holds a config, the
architecture has an adapter), so a typo or an unsupported model fails in a second, not after
minutes of reading weights.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

from evopress.errors import ModelLoadError
from evopress.models.registry import check_supported

DTYPES = ("auto", "float32", "float16", "bfloat16")
DTYPE_ALIASES = {"fp32": "float32", "fp16": "float16", "half": "float16", "bf16": "bfloat16"}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


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


def _load_tokenizer(name: str, local: bool):
    from transformers import AutoTokenizer

    if local and not any((Path(name) / f).is_file() for f in TOKENIZER_FILES):
        return None
    return AutoTokenizer.from_pretrained(name)


def load_model(path_or_name, dtype="auto", device="cpu"):
    """(model, tokenizer) in eval mode; tokenizer is None for a directory without one.

    dtype: "auto" (as stored), "float32", "float16", "bfloat16" (or fp32, fp16, bf16) or a torch.dtype.
    device: "cpu", "cuda", "cuda:1", ... or "auto" to spread a large model over all GPUs.
    """
    from transformers import AutoModelForCausalLM

    name = os.fspath(path_or_name)
    local = Path(name).expanduser().exists() or _looks_local(name)
    if local:
        name = str(Path(name).expanduser())
        _check_local(Path(name))
    check_supported(_model_type(name, local))
    kwargs = {"dtype": _torch_dtype(dtype)}
    has_accelerate = importlib.util.find_spec("accelerate") is not None
    if device == "auto" and not has_accelerate:
        raise ModelLoadError('device="auto" needs the accelerate package: pip install accelerate')
    if has_accelerate:
        kwargs["device_map"] = device  # place weights while reading, not after
    try:
        model = AutoModelForCausalLM.from_pretrained(name, **kwargs)
    except OSError as err:
        raise ModelLoadError(f"cannot load the weights of {name!r}: {err}") from err
    if not has_accelerate:
        model.to(device)
    model.eval()
    return model, _load_tokenizer(name, local)
