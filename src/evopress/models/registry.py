"""Pick the adapter for a loaded model from its `config.model_type`."""

from __future__ import annotations

from evopress.errors import UnsupportedModelError
from evopress.models.llama import FAMILIES, LlamaFamilyAdapter

ADAPTERS = {model_type: LlamaFamilyAdapter for model_type in FAMILIES}

# Model types evopress writes but does not search on.
EXPORT_ONLY = {
    "nemotron-nas": "this layout is what the 'nemotron-nas' export writes; serve or evaluate it with "
    "vLLM, or transformers with trust_remote_code=True, and run searches on the source model",
    "evopress-pruned": "this layout is what `evopress prune --export pruned` writes; evaluate it with "
    "transformers and trust_remote_code=True, and run searches on the source model",
}


def supported_model_types() -> tuple[str, ...]:
    return tuple(sorted(ADAPTERS))


def check_supported(model_type: str | None) -> None:
    """Fail early, before any weights load, for an architecture without an adapter."""
    if model_type not in ADAPTERS:
        advice = EXPORT_ONLY.get(model_type, "use one of these, or add an adapter in evopress.models")
        raise UnsupportedModelError(
            f"model_type {model_type!r} is not supported; evopress works with "
            f"{', '.join(supported_model_types())} (Llama-family causal LMs): {advice}"
        )


def adapter_for(model):
    """The adapter that knows `model`'s layers and names."""
    config = getattr(model, "config", None)
    check_supported(getattr(config, "model_type", None))
    if not hasattr(model, "model") or not hasattr(model.model, "layers"):
        raise UnsupportedModelError(
            f"{type(model).__name__} has no decoder stack; load the model with "
            "AutoModelForCausalLM (or evopress.models.load_model), not a base or head-only class."
        )
    return ADAPTERS[config.model_type](model)
