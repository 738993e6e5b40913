"""Write the Hugging Face side files of an export: config.json and generation_config.json.

Exporters build the weights themselves; these files carry what `save_pretrained` would stamp on
them (the model class, the weights' dtype) and the generation defaults of the source model.
"""

from __future__ import annotations


def save_config(model, config, out_dir) -> None:
    """Save `config` as the config of `model`'s class with the model's current dtype."""
    config.architectures = [type(model).__name__]
    config.dtype = next(model.parameters()).dtype
    config.save_pretrained(out_dir)


def save_generation_config(model, out_dir) -> None:
    generation = getattr(model, "generation_config", None)
    if generation is not None:
        generation.save_pretrained(out_dir)
