"""Checkpoints of post-training: the trainer's exact state at a step, written atomically, read without pickle.

A work directory holds

    state.json                 the step, the settings and inputs it was made under, the loss
                               history, the evaluation before training, and the tensor file's name
    step-00000120.safetensors  fp32 master weights, AdamW's moments and step counts, by parameter name

The tensor file is written whole under its own name, then state.json is replaced (atomically) to
point at it, then the previous tensor file is removed: killed anywhere, state.json names a complete
file, and restoring it gives the trainer back bit for bit, so a resumed run ends with the weights
of an uninterrupted one (on the CPU, where the kernels are deterministic).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from evopress.errors import RecipeError
from evopress.models.loading import check_safetensors
from evopress.rundir import write_atomic

STATE = "state.json"
FORMAT = 1


def read_state(work: Path) -> dict | None:
    """The work directory's state.json, or None where training has not checkpointed yet."""
    path = work / STATE
    if not path.is_file():
        return None
    try:
        state = json.loads(path.read_text())
    except ValueError as err:
        raise RecipeError(f"{path} is corrupt ({err}); pass --restart to train afresh") from err
    if state.get("format") != FORMAT:
        raise RecipeError(f"{path} has checkpoint format {state.get('format')!r}, this evopress writes {FORMAT}; "
                          "pass --restart to train afresh")
    return state


def write_state(work: Path, state: dict) -> None:
    write_atomic(work / STATE, json.dumps({"format": FORMAT, **state}, indent=1) + "\n")


def save(work: Path, masters, names: list[str], state: dict) -> None:
    """Write the trainer's tensors at `masters.steps`, then `state` (plus the file's name) as state.json."""
    old = read_state(work)
    name = f"step-{masters.steps:08d}.safetensors"
    tensors = {f"master/{n}": m.detach() for n, m in zip(names, masters.masters)}
    for i, moments in masters.optimizer.state_dict()["state"].items():
        tensors.update({f"{key}/{names[i]}": value for key, value in moments.items()})
    tmp = work / f".{name}.tmp"
    save_file({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}, str(tmp))
    tmp.replace(work / name)
    write_state(work, {**state, "step": masters.steps, "tensors": name})
    if old and old.get("tensors") and old["tensors"] != name:
        (work / old["tensors"]).unlink(missing_ok=True)


def load(work: Path, masters, names: list[str], state: dict) -> None:
    """Put the checkpoint `state` names back into `masters` (weights, AdamW moments, step)."""
    path = work / state["tensors"]
    if not path.is_file():
        raise RecipeError(f"{work / STATE} names {path.name}, which is missing; pass --restart to train afresh")
    check_safetensors(path)
    moments = {}
    # read on the CPU: load_state_dict moves the moments to their parameters, AdamW wants steps there
    with safe_open(str(path), framework="pt", device="cpu") as f:
        stored = {}  # parameter name -> {"master": key, "exp_avg": key, ...}
        for key in f.keys():
            kind, name = key.split("/", 1)
            stored.setdefault(name, {})[kind] = key
        missing = [n for n in names if "master" not in stored.get(n, {})]
        if missing:
            raise RecipeError(f"{path} has no weights for {missing[0]} (a checkpoint of another model?); "
                              "pass --restart to train afresh")
        with torch.no_grad():
            for i, (name, master) in enumerate(zip(names, masters.masters)):
                keys = stored[name]
                master.copy_(f.get_tensor(keys.pop("master")))
                if keys:  # a parameter that never had a gradient has no moments
                    moments[i] = {kind: f.get_tensor(key) for kind, key in keys.items()}
    optimizer = masters.optimizer.state_dict()
    masters.optimizer.load_state_dict({"state": moments, "param_groups": optimizer["param_groups"]})
    masters.steps = int(state["step"])
    _refresh(masters)


def _refresh(masters) -> None:
    """The model's own copies of weights not stored in fp32 (a bf16 model on a GPU) from the masters."""
    with torch.no_grad():
        for p, master in zip(masters.params, masters.masters):
            if p.data.data_ptr() != master.data_ptr():
                p.data.copy_(master)


def clear(work: Path) -> None:
    """Remove the tensor files (a finished training keeps only its state.json)."""
    for f in work.glob("step-*.safetensors"):
        f.unlink()
    for f in work.glob(".step-*.tmp"):
        f.unlink()
