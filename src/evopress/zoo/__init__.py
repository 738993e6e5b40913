"""Small, really trained Llama models to compress: tests, demos and benchmarks run offline on them.

    from evopress.zoo import tiny_model_dir, train
    model_dir = tiny_model_dir()              # the shipped tiny checkpoint
    train("bench", "runs/zoo-bench")          # the benchmark subject, on a GPU
"""

from evopress.zoo.presets import PRESETS, Preset, get_preset
from evopress.zoo.shipped import tiny_model_dir
from evopress.zoo.training import train

__all__ = ["PRESETS", "Preset", "get_preset", "tiny_model_dir", "train"]
