"""Config for DeciLM / Nemotron-NAS checkpoints written by evopress (model_type "nemotron-nas").

A Llama config plus `block_configs`: one entry per layer saying whether its attention and its MLP
exist (`no_op`), how many query heads share a KV head (`n_heads_in_group`) and how wide the MLP is
(`ffn_mult`, see `ffn_intermediate_size`). vLLM, SGLang and TensorRT-LLM read the entries as
objects (`block.attention.no_op`), llama.cpp reads the JSON; both work with this class.

Self-contained on purpose: transformers copies this file next to the weights and imports it with
`trust_remote_code=True`, so it may import only torch and transformers.
"""

from transformers import LlamaConfig

SECTION_DEFAULTS = {
    "attention": {"no_op": False, "replace_with_linear": False, "n_heads_in_group": None},
    "ffn": {"no_op": False, "replace_with_linear": False, "ffn_mult": None},
}


def find_multiple(n: int, k: int) -> int:
    """The smallest multiple of k that is at least n."""
    return n if n % k == 0 else n + k - n % k


def ffn_intermediate_size(ffn_mult: float, hidden_size: int) -> int:
    """The DeciLM convention every Nemotron-NAS loader uses to turn `ffn_mult` into a width."""
    return find_multiple(int(2 * ffn_mult * hidden_size / 3), 256)


class BlockSection:
    """One half of a block config (attention or ffn): its JSON keys as attributes."""

    def __init__(self, kind: str, values: dict):
        self.__dict__.update({**SECTION_DEFAULTS[kind], **values})

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    def __repr__(self) -> str:
        return f"BlockSection({self.__dict__})"


class BlockConfig:
    """One layer of a Nemotron-NAS model."""

    def __init__(self, attention: dict, ffn: dict):
        self.attention = BlockSection("attention", attention)
        self.ffn = BlockSection("ffn", ffn)

    @classmethod
    def from_any(cls, value) -> "BlockConfig":
        if isinstance(value, BlockConfig):
            return value
        return cls(dict(value.get("attention", {})), dict(value.get("ffn", {})))

    def to_dict(self) -> dict:
        return {"attention": self.attention.to_dict(), "ffn": self.ffn.to_dict()}

    def __repr__(self) -> str:
        return f"BlockConfig({self.to_dict()})"


class NemotronNasConfig(LlamaConfig):
    model_type = "nemotron-nas"

    def __init__(self, block_configs=None, **kwargs):
        super().__init__(**kwargs)
        self.block_configs = [BlockConfig.from_any(b) for b in block_configs or []]

    def to_dict(self) -> dict:
        data = super().to_dict()
        data["block_configs"] = [b.to_dict() for b in self.block_configs]
        return data
