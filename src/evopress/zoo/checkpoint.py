"""A zoo model folder: the HF files any loader reads, plus zoo.json saying how it was made."""

from __future__ import annotations

import json
import os
import platform
from dataclasses import asdict
from pathlib import Path

import tokenizers
import torch
import transformers

import evopress

RECORD = "zoo.json"

# Files a zoo folder must hold to be used; zoo.json is written last, so it marks a finished run.
REQUIRED = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", RECORD)


def save_model(model, tokenizer, out_dir: Path) -> None:
    """Write weights (safetensors), config and tokenizer in the standard Hugging Face layout."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / RECORD).unlink(missing_ok=True)  # the folder is unfinished until the new record lands
    bars = transformers.utils.logging.is_progress_bar_enabled()
    transformers.utils.logging.disable_progress_bar()  # one file: a "shards" bar is only noise
    try:
        model.save_pretrained(out_dir)
    finally:
        if bars:
            transformers.utils.logging.enable_progress_bar()
    tokenizer.save_pretrained(out_dir)
    # safetensors writes through a private temp file (mode 600); others must be able to read it
    (out_dir / "model.safetensors").chmod(0o644)
    # the generic class name is what both transformers 4 and 5 (and other runtimes) understand
    config_path = out_dir / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    config_path.write_text(json.dumps(config, indent=2) + "\n")


def build_record(preset, seed: int, device: torch.device, **results) -> dict:
    """What zoo.json holds: the recipe, the results and every version that could change them."""
    return {
        "preset": asdict(preset),
        "seed": seed,
        "device": str(device),
        "bitwise_reproducible": device.type == "cpu",
        **results,
        "versions": {
            "evopress": evopress.__version__,
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "tokenizers": tokenizers.__version__,
        },
    }


def write_record(out_dir: Path, record: dict) -> None:
    """Write zoo.json atomically (temp file + rename), so a half-written folder never looks finished."""
    path = Path(out_dir) / RECORD
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)


def read_record(model_dir: Path) -> dict:
    return json.loads((Path(model_dir) / RECORD).read_text())


def is_complete(model_dir: Path) -> bool:
    return all((Path(model_dir) / name).is_file() for name in REQUIRED)
