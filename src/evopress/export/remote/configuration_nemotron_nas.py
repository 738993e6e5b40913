"""Configs for the checkpoints evopress writes with its own modeling code (`trust_remote_code=True`).

`NemotronNasConfig` (model_type "nemotron-nas"): DeciLM / Nemotron-NAS. A Llama config plus
`block_configs`: one entry per layer saying whether its attention and its MLP exist (`no_op`), how
many query heads share a KV head (`n_heads_in_group`) and how wide the MLP is (`ffn_mult`, see
`ffn_intermediate_size`). vLLM, SGLang and TensorRT-LLM read the entries as objects
(`block.attention.no_op`), llama.cpp reads the JSON; both work with this class.

`PrunedLlamaConfig` (model_type "evopress-pruned"): a Llama config with explicit per-layer sizes,
for structured pruning (DarwinLM, arXiv 2502.07780), where every layer keeps its own number of
query heads, KV heads and MLP channels (0: that sublayer is absent).

Both give `layer_sizes()`, what the shared modeling code builds each layer from.

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

    def layer_sizes(self) -> list[tuple[int, int, int]]:
        """(query heads, KV heads, MLP width) of each layer; 0 heads or width: that sublayer is a no-op."""
        sizes = []
        for block in self.block_configs:
            attention, ffn = block.attention, block.ffn
            if attention.replace_with_linear or ffn.replace_with_linear:
                raise NotImplementedError("replace_with_linear blocks are not supported by this modeling file")
            heads = 0 if attention.no_op else self.num_attention_heads
            kv_heads = 0 if attention.no_op else heads // attention.n_heads_in_group
            width = 0 if ffn.no_op else ffn_intermediate_size(ffn.ffn_mult, self.hidden_size)
            sizes.append((heads, kv_heads, width))
        return sizes


class PrunedLlamaConfig(LlamaConfig):
    """Llama with per-layer query heads, KV heads and MLP width (0: the sublayer is absent).

    `num_attention_heads` and `head_dim` stay the source model's (rotary embeddings are sized by
    them); `attention_bias` is the q/k/v bias and `o_proj_bias` the output projection's, apart
    because Qwen2 has the one without the other; `qk_norm` is Qwen3's per-head query/key RMSNorm.
    """

    model_type = "evopress-pruned"

    def __init__(self, num_attention_heads_per_layer=None, num_key_value_heads_per_layer=None,
                 intermediate_size_per_layer=None, o_proj_bias=None, qk_norm=False, **kwargs):
        super().__init__(**kwargs)
        layers = self.num_hidden_layers
        self.num_attention_heads_per_layer = list(num_attention_heads_per_layer or [self.num_attention_heads] * layers)
        self.num_key_value_heads_per_layer = list(num_key_value_heads_per_layer
                                                  or [self.num_key_value_heads] * layers)
        self.intermediate_size_per_layer = list(intermediate_size_per_layer or [self.intermediate_size] * layers)
        self.o_proj_bias = self.attention_bias if o_proj_bias is None else o_proj_bias
        self.qk_norm = qk_norm
        for heads, kv_heads, _ in self.layer_sizes():
            if heads and (not kv_heads or heads % kv_heads):
                raise ValueError(f"a layer's {heads} query heads cannot share {kv_heads} KV heads evenly")
        if not all(len(sizes) == layers for sizes in (self.num_attention_heads_per_layer,
                                                      self.num_key_value_heads_per_layer,
                                                      self.intermediate_size_per_layer)):
            raise ValueError(f"the per-layer sizes must each list num_hidden_layers ({layers}) values")

    def layer_sizes(self) -> list[tuple[int, int, int]]:
        """(query heads, KV heads, MLP width) of each layer, 0 for an absent sublayer."""
        return list(zip(self.num_attention_heads_per_layer, self.num_key_value_heads_per_layer,
                        self.intermediate_size_per_layer))
