"""The config of a model with whole decoder blocks deleted.

Deleting blocks (layers renumbered, `num_hidden_layers` lowered) is the one depth-pruning layout
every engine loads (ecosystem §2.2). Configs also carry per-layer facts that must shrink with the
layers, or the loader builds the wrong attention for the layers that remain.
"""

from __future__ import annotations

# Config fields holding one entry per decoder layer.
PER_LAYER_LISTS = ("layer_types", "mlp_layer_types", "no_rope_layers")

# Config fields holding a layer count that splits the stack: layers [0, n) behave one way, the rest
# another (Qwen2/Qwen3: the first `max_window_layers` layers use full attention).
LAYER_SPLIT_COUNTS = ("max_window_layers",)


def config_without_blocks(config, removed):
    """A new config of the same class for the model without the `removed` block indices."""
    removed = set(removed)
    total = config.num_hidden_layers
    kept = [i for i in range(total) if i not in removed]
    data = config.to_dict()
    data["num_hidden_layers"] = len(kept)
    for name in PER_LAYER_LISTS:
        values = data.get(name)
        if isinstance(values, (list, tuple)) and len(values) == total:
            data[name] = [values[i] for i in kept]
    for name in LAYER_SPLIT_COUNTS:
        if isinstance(data.get(name), int):
            data[name] = sum(1 for i in kept if i < data[name])
    return type(config).from_dict(data)

