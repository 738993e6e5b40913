"""Files that describe a sparse export: the per-layer profile, an llm-compressor recipe, a check.

The model itself is written by `export.hf` as dense weights with zeros (what transformers, vLLM
and llm-compressor load today; the sparse-bitmask formats are legacy). Beside it go:

- `evopress_sparsity.json`: {"target", "overall", "builder", "layers": {module name: sparsity}}.
- `recipe.yaml`: the same profile as an llm-compressor oneshot recipe. `SparseGPTModifier` (and
  `WandaPruningModifier`) take `sparsity` as one float or as a list, not a mapping: entry i is the
  sparsity of the i-th module matched by `targets`, counted in the model's `named_modules()`
  order, whatever order `targets` lists them in. So `targets` is the exact module names and
  `sparsity` their values, both in model order. See docs/sparsity.md for the format and how to
  apply it.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from safetensors import safe_open

PROFILE_FILE, RECIPE_FILE = "evopress_sparsity.json", "recipe.yaml"


def write_profile(out_dir: Path, layers: dict[str, float], target: float, overall: float, builder: str) -> None:
    (Path(out_dir) / PROFILE_FILE).write_text(json.dumps(
        {"target": target, "overall": overall, "builder": builder, "layers": layers}, indent=1))
    (Path(out_dir) / RECIPE_FILE).write_text(yaml.safe_dump(recipe(layers, builder), sort_keys=False))


def recipe(layers: dict[str, float], builder: str) -> dict:
    """An llm-compressor recipe that prunes each listed module to its own sparsity.

    `layers` must be in the model's module order (the adapter's block-by-block order is):
    llm-compressor pairs the list of sparsities with the matched modules by position, so any
    other order would prune each layer to another layer's level without an error.
    """
    modifier = "WandaPruningModifier" if builder == "wanda" else "SparseGPTModifier"
    args = {"sparsity": [round(s, 6) for s in layers.values()], "mask_structure": "0:0",
            "targets": list(layers)}  # exact names match only themselves, no "re:" needed
    return {"sparsity_stage": {"run_type": "oneshot", "sparsity_modifiers": {modifier: args}}}


def measure(model_dir: Path, names: list[str]) -> dict[str, float]:
    """Fraction of exact zeros in each named linear layer's weight, read from the saved files."""
    wanted = {f"{n}.weight": n for n in names}
    out = {}
    for path in sorted(Path(model_dir).glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as f:
            for key in f.keys():
                if key in wanted:
                    t = f.get_tensor(key)
                    out[wanted[key]] = float((t == 0).sum()) / t.numel()
    return out
