"""Models: the only package that knows Hugging Face module names and config fields.

`load_model` reads a model directory, `adapter_for` wraps the model in a `ModelAdapter` that
exposes blocks, sublayer skipping (EvoPress depth pruning) and the names exporters rewrite.
"""

from evopress.models.adapter import SUBLAYER_KINDS, CheckpointLayout, ModelAdapter, PlanError
from evopress.models.llama import FAMILIES, LlamaFamilyAdapter
from evopress.models.loading import ModelLoadError, load_model
from evopress.models.registry import adapter_for, supported_model_types

__all__ = [
    "SUBLAYER_KINDS",
    "CheckpointLayout",
    "ModelAdapter",
    "PlanError",
    "FAMILIES",
    "LlamaFamilyAdapter",
    "ModelLoadError",
    "load_model",
    "adapter_for",
    "supported_model_types",
]
