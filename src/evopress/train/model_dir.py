"""The model directories of `evopress train`: checked before anything loads, loaded, written back alike.

Any directory evopress exports trains (depth `hf` and `nemotron-nas`, sparsity, structured `hf` and
`pruned`), and so does a plain Hugging Face model of a supported family. The two layouts transformers
cannot build by itself (model types `nemotron-nas` and `evopress-pruned`) load with
`trust_remote_code=True` only when their modeling files are evopress's own, byte for byte: a
directory's Python code is never run otherwise.

The trained model is written in the input's own layout: every file but the weights copied, each
safetensors file written again with the same tensor names, shapes, dtypes and metadata.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from evopress.errors import ExportError, ModelLoadError, RecipeError
from evopress.export.directory import _mkdir_mode
from evopress.models.loading import (TOKENIZER_FILES, WEIGHTS_FILE, WEIGHTS_INDEX, check_seq_len, check_tokenizer,
                                     load_model)

REMOTE_DIR = Path(__file__).parents[1] / "export" / "remote"
REMOTE_TYPES = ("nemotron-nas", "evopress-pruned")


def local_dir(name: str) -> Path:
    """The directory `name` is: zoo:tiny, a local path, or a hub name (its downloaded snapshot)."""
    if name.startswith("zoo:"):
        from evopress.zoo.shipped import zoo_model_dir
        return Path(zoo_model_dir(name[len("zoo:"):]))
    path = Path(name).expanduser()
    if path.exists() or name.startswith((".", "/", "~")) or name.count("/") > 1:
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"{path} is not a model directory (no config.json); pass the folder that "
                                 "save_pretrained or an evopress export wrote")
        return path.resolve()
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(name))
    except Exception as err:  # noqa: BLE001  (the hub's errors have no common base worth naming)
        raise ModelLoadError(f"cannot get {name!r} from the Hugging Face hub ({err}); download it and pass "
                             "its local directory (offline machines need a local path)") from err


def read_config(path: Path) -> dict:
    try:
        return json.loads((path / "config.json").read_text())
    except ValueError as err:
        raise ModelLoadError(f"{path}/config.json is not valid JSON ({err}); re-save the model") from err


def weight_files(path: Path) -> list[str]:
    """The safetensors files holding the model's weights, in the index's order."""
    if (path / WEIGHTS_INDEX).is_file():
        return list(dict.fromkeys(json.loads((path / WEIGHTS_INDEX).read_text())["weight_map"].values()))
    if (path / WEIGHTS_FILE).is_file():
        return [WEIGHTS_FILE]
    raise ModelLoadError(f"{path} has no safetensors weights ({WEIGHTS_FILE} or {WEIGHTS_INDEX}); evopress train "
                         "writes the trained weights in the input's own files: re-save the model with "
                         "save_pretrained (safetensors is its default)")


def check_student(path: Path, seq_len: int) -> dict:
    """Refuse, from config.json alone, what cannot be trained here; returns the config."""
    config = read_config(path)
    if "quantization_config" in config:
        method = config["quantization_config"].get("quant_method", "quantized")
        raise RecipeError(f"{path} is a {method} checkpoint (config.json has a quantization_config): evopress train "
                          "trains full-precision weights, and the quantized codes cannot take gradient steps. "
                          "Train the pruned or sparse model before quantizing, then quantize the trained one")
    check_seq_len(config, seq_len)
    check_tokenizer(path)  # the training text is tokenized with the student's own tokenizer
    if config.get("model_type") in REMOTE_TYPES:
        check_remote_code(path, config)
    weight_files(path)
    return config


def check_teacher(path: Path, student: dict) -> dict:
    """The teacher's config, refused where its vocabulary is not the student's (KL compares token by token)."""
    config = read_config(path)
    if config.get("vocab_size") != student.get("vocab_size"):
        raise RecipeError(f"the teacher {path} has a vocabulary of {config.get('vocab_size')} tokens, the student "
                          f"{student.get('vocab_size')}: distillation compares their next-token distributions "
                          "token by token; pass the dense model the student was compressed from")
    if "quantization_config" in config:
        raise RecipeError(f"the teacher {path} is quantized; pass the dense model the student was compressed from")
    return config


def check_same_tokenizer(student: Path, teacher: Path) -> None:
    """Refuse a teacher whose tokenizer maps tokens to other ids (a teacher without one is taken as is)."""
    from transformers import AutoTokenizer

    if not any((teacher / f).is_file() for f in TOKENIZER_FILES):
        return
    if AutoTokenizer.from_pretrained(teacher).get_vocab() != AutoTokenizer.from_pretrained(student).get_vocab():
        raise RecipeError(f"the teacher {teacher} has another tokenizer than the student (the same number of "
                          "tokens, other ids); pass the dense model the student was compressed from")


def check_remote_code(path: Path, config: dict) -> None:
    """Refuse modeling code in `path` that is not evopress's own (it would run with trust_remote_code)."""
    modules = {ref.split(".")[0] for ref in config.get("auto_map", {}).values()}
    for module in sorted(modules) or ["(none named in auto_map)"]:
        ours, theirs = REMOTE_DIR / f"{module}.py", path / f"{module}.py"
        if not (ours.is_file() and theirs.is_file() and _sha(ours) == _sha(theirs)):
            raise ModelLoadError(
                f"{path} is a {config.get('model_type')} model whose modeling code {theirs.name} is not the one "
                "evopress ships; evopress train runs only its own remote code. Re-export it with this evopress")


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load(path: Path, dtype, device: str):
    """(model, tokenizer) on `device` in `dtype` ("auto": as stored), in eval mode; the tokenizer is
    None for a directory without one (a teacher may have none)."""
    if read_config(path).get("model_type") not in REMOTE_TYPES:
        return load_model(path, dtype=dtype, device=device)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    check_remote_code(path, read_config(path))
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, trust_remote_code=True).to(device).eval()
    has_tokenizer = any((path / f).is_file() for f in TOKENIZER_FILES)
    return model, AutoTokenizer.from_pretrained(path) if has_tokenizer else None


def fingerprint(path: Path) -> str:
    """SHA-256 over config.json and every weight file: a checkpoint belongs to exactly these weights."""
    digest = hashlib.sha256()
    for name in ["config.json", *weight_files(path)]:
        with open(path / name, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 24), b""):
                digest.update(chunk)
    return digest.hexdigest()


def write_model(src: Path, out: Path, model, trained: list[torch.Tensor]) -> list[str]:
    """Write the model of `src` into `out` with `trained` (one tensor per `model.parameters()`) in
    place of its parameters; returns the files written. Every other file of `src` is copied."""
    by_name = _trained_by_name(model, trained)
    known = set(model.state_dict())
    written, used = [], set()
    for file in weight_files(src):
        with safe_open(str(src / file), framework="pt") as f:
            tensors = {}
            for key in f.keys():
                if key not in known:
                    raise ExportError(f"tensor {key} of {src / file} has no counterpart in the loaded model (the "
                                      "loader renamed it), so the trained weights cannot be written under the "
                                      "input's names; save the model with save_pretrained and train that")
                stored = f.get_tensor(key)
                if key in by_name:
                    tensors[key] = _cast_like(by_name[key], stored, key)
                    used.add(id(by_name[key]))
                else:
                    tensors[key] = stored  # a buffer the file carries: not trained
            _atomic_save(tensors, out / file, f.metadata())
        written.append(file)
    if len(used) != len({id(t) for t in by_name.values()}):
        raise ExportError(f"some trained parameters are in none of {src}'s weight files; the input is incomplete")
    for item in sorted(src.iterdir()):
        if item.is_file() and item.name not in written and not item.name.startswith("."):
            shutil.copyfile(item, out / item.name)
            written.append(item.name)
    return written


def _trained_by_name(model, trained: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """Every name of every parameter (tied ones under both names) -> its trained tensor."""
    index = {id(p): i for i, p in enumerate(model.parameters())}
    return {name: trained[index[id(p)]] for name, p in model.named_parameters(remove_duplicate=False)}


def _cast_like(value: torch.Tensor, stored: torch.Tensor, key: str) -> torch.Tensor:
    if value.shape != stored.shape:
        raise ExportError(f"{key}: trained shape {tuple(value.shape)}, stored {tuple(stored.shape)}")
    return value.detach().to("cpu", stored.dtype).contiguous()


def _atomic_save(tensors: dict, path: Path, metadata) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    tmp.chmod(_mkdir_mode() & 0o666)  # safetensors writes 0600; a model is readable like its other files
    tmp.replace(path)
