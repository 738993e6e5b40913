"""Zoo presets: a table of model shapes and training budgets, as plain frozen data.

`tiny` trains on two CPU cores in a few minutes and is the subject of tests and the demo; it has
many thin layers so that a layer-wise search has a rich space. `small` is the GGUF subject: the
same budget in fewer, wider layers (hidden 256, MLP 512), because llama.cpp's k-quants need rows
that are multiples of 256 wide (Q4_0/Q8_0 multiples of 32) and tiny's hidden 128 fits k-quants
only in ffn_down; it trains once on CPU into the cache (20 minutes on two busy cores). `bench` is the
benchmark subject of BENCHMARKS.md (about 60M parameters, trained on one GPU in minutes).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from evopress.errors import RecipeError


@dataclass(frozen=True)
class Preset:
    """One zoo model: its Llama shape, its training recipe and how it is stored."""

    name: str
    # Llama shape
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int  # fewer than num_heads: grouped-query attention, as in Llama 3
    intermediate_size: int
    seq_len: int
    # training budget and optimiser
    train_tokens: int  # total tokens seen; training makes one pass over distinct windows
    batch_size: int  # sequences per optimiser step
    lr: float
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio
    warmup_steps: int = 20
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    # data and tokenizer
    site_packages: bool = False  # also train on site-packages (more text, machine-dependent)
    tokenizer_chars: int = 100_000_000  # characters of train text the BPE learns from
    eval_tokens: int = 65_536  # held-out tokens for the final perplexity
    # runtime
    cpu_threads: int = 2  # fixed so that a CPU run reproduces bit for bit
    bf16_autocast: bool = False  # on CUDA only; CPU always trains in fp32
    save_dtype: str = "float32"

    def __post_init__(self):
        if self.hidden_size % self.num_heads or self.num_heads % self.num_kv_heads:
            raise RecipeError(
                f"preset {self.name!r}: hidden_size ({self.hidden_size}) must be a multiple of num_heads "
                f"({self.num_heads}), and num_heads a multiple of num_kv_heads ({self.num_kv_heads})"
            )
        if self.save_dtype not in ("float32", "bfloat16", "float16"):
            raise RecipeError(
                f"preset {self.name!r}: save_dtype must be float32, bfloat16 or float16, not {self.save_dtype!r}"
            )

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.seq_len

    @property
    def steps(self) -> int:
        return max(1, self.train_tokens // self.tokens_per_step)

    @property
    def data_source(self) -> str:
        """The evopress.data source name of this preset's corpus (train and held-out)."""
        return "builtin+site-packages" if self.site_packages else "builtin"

    def replace(self, **changes) -> Preset:
        return replace(self, **changes)


PRESETS: dict[str, Preset] = {
    "tiny": Preset(
        name="tiny",
        vocab_size=2048,
        hidden_size=128,
        num_layers=12,
        num_heads=4,
        num_kv_heads=2,
        intermediate_size=512,
        seq_len=256,
        train_tokens=700_000,
        batch_size=8,
        lr=3e-3,
    ),
    "bench": Preset(
        name="bench",
        vocab_size=8192,
        hidden_size=512,
        num_layers=16,
        num_heads=8,
        num_kv_heads=8,
        intermediate_size=1408,
        seq_len=1024,
        train_tokens=40_000_000,
        batch_size=32,
        lr=2e-3,
        warmup_steps=100,
        site_packages=True,
        eval_tokens=524_288,
        bf16_autocast=True,
        save_dtype="bfloat16",
    ),
}
# tiny, twice as wide and half as deep: rows of 256 and 512, so every llama.cpp k-quant fits every layer
PRESETS["small"] = PRESETS["tiny"].replace(name="small", hidden_size=256, num_layers=6)


def get_preset(preset) -> Preset:
    """A Preset from itself or its name; unknown names list the known ones."""
    if isinstance(preset, Preset):
        return preset
    if preset not in PRESETS:
        raise RecipeError(f"unknown zoo preset {preset!r}: choose one of {', '.join(PRESETS)}")
    return PRESETS[preset]
