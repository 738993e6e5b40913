"""The model adapter contract: everything search, compress and export may ask of a model.

An adapter wraps one loaded Hugging Face causal LM. Depth pruning (EvoPress §3.3, arXiv 2410.14649)
needs three things from it: the decoder blocks, the ability to switch an attention or MLP sublayer
off and on again cheaply (§2.8: a candidate is applied by swapping only what changed), and the
tensor names an exporter must rewrite. Everything that knows Hugging Face module names lives behind
this interface, in `evopress.models`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from evopress.compress.depth import DropPlan
from evopress.errors import PlanError
from evopress.models import capture

SUBLAYER_KINDS = ("attn", "mlp")


@dataclass(frozen=True)
class CheckpointLayout:
    """Where a decoder block's tensors live in the model's state dict.

    A tensor of block i is named `f"{block_prefix}{i}.{rest}"`; `rest` belongs to sublayer kind k
    when it starts with one of `sublayer_modules[k]` (the sublayer and its pre-norm).
    `output_projection[k]` is the module whose output the residual stream adds: zeroing its
    weight (and bias) makes the sublayer contribute exactly nothing.
    `row_units[m]` says what the output rows of input projection m are, for structured pruning
    (DarwinLM): "heads" (query heads), "kv_heads" (key/value heads) or "channels" (MLP channels);
    slicing those rows, and the output projection's columns, makes the smaller sublayer.
    """

    block_prefix: str
    sublayer_modules: dict[str, tuple[str, ...]]
    output_projection: dict[str, str]
    row_units: dict[str, str] = field(default_factory=dict)

    def split(self, key: str) -> tuple[int, str] | None:
        """(block index, name inside the block) for a block tensor, None for any other tensor."""
        if not key.startswith(self.block_prefix):
            return None
        index, _, rest = key[len(self.block_prefix):].partition(".")
        return (int(index), rest) if index.isdigit() else None

    def kind_of(self, rest: str) -> str | None:
        """Which sublayer ('attn' or 'mlp') a name inside a block belongs to, if any."""
        for kind, modules in self.sublayer_modules.items():
            if any(rest == m or rest.startswith(m + ".") for m in modules):
                return kind
        return None


class ModelAdapter(ABC):
    """One causal LM seen as a stack of blocks, each with an attention and an MLP sublayer."""

    model: object  # the wrapped torch module

    # Structure and skipping (search, compress, eval).

    @property
    @abstractmethod
    def num_blocks(self) -> int: ...

    @abstractmethod
    def blocks(self) -> list:
        """The decoder layer modules, in order."""

    @property
    @abstractmethod
    def decoder(self):
        """The base model: embeddings, blocks and final norm, without the LM head."""

    @abstractmethod
    def sublayer_params(self, kind: str) -> int:
        """Parameters of one 'attn' or 'mlp' sublayer including its pre-norm (budget unit)."""

    @abstractmethod
    def is_dropped(self, block: int, kind: str) -> bool: ...

    @abstractmethod
    def set_dropped(self, block: int, kind: str, dropped: bool) -> None:
        """Drop or restore one sublayer; a no-op when it is already in that state."""

    # Linear layers (sparsity and quantization databases).

    @abstractmethod
    def linear_groups(self) -> tuple[tuple[str, ...], ...]:
        """Names, inside a block, of its prunable linear layers, grouped by shared input.

        Layers of one group read the same activations (q/k/v; gate/up), so one Hessian serves
        them all.
        """

    def linears(self, block: int) -> dict:
        """Name inside the block -> the block's linear module, in group order."""
        layer = self.blocks()[block]
        return {name: layer.get_submodule(name) for group in self.linear_groups() for name in group}

    def linear_name(self, block: int, name: str) -> str:
        """The checkpoint-style full name of a block's linear layer."""
        return f"{self.layout.block_prefix}{block}.{name}"

    def embed(self, input_ids):
        """The first block's input for `input_ids` (the decoder's token embedding)."""
        return self.model.get_input_embeddings()(input_ids)

    @abstractmethod
    def embedding_modules(self) -> list:
        """Modules run before the first block (moved to the compute device for offloaded models)."""

    # Names and files (export).

    @property
    @abstractmethod
    def layout(self) -> CheckpointLayout: ...

    @property
    @abstractmethod
    def name_or_path(self) -> str | None:
        """Where the model was loaded from, if known."""

    @abstractmethod
    def dense_state_dict(self) -> dict:
        """Every tensor of the full model by checkpoint name, dropped sublayers included."""

    @abstractmethod
    def geometry(self):
        """Shapes and settings in neutral terms (`evopress.models.geometry.Geometry`)."""

    @abstractmethod
    def config_without_blocks(self, removed):
        """A copy of the model's config with the `removed` blocks deleted."""

    @abstractmethod
    def save_config(self, config, out_dir) -> None:
        """Write `config` and the generation config as the source model's class would."""

    @abstractmethod
    def save_generation_config(self, out_dir) -> None: ...

    def final_norm(self):
        """The norm between the last block and the LM head."""
        raise NotImplementedError(f"{type(self).__name__} does not expose its final norm")

    def residual_step(self, block: int, kind: str, hidden, kwargs: dict):
        """One sublayer with its residual: `hidden + sublayer(pre_norm(hidden))` (batched depth search)."""
        raise NotImplementedError(f"{type(self).__name__} does not run single sublayers")

    def compile_steps(self, backend: str = "inductor") -> None:
        """Make `residual_step` and `stacked_block` run compiled code (`torch.compile`)."""
        raise NotImplementedError(f"{type(self).__name__} cannot compile its sublayer steps")

    def stacked_block(self, block: int, hidden, kwargs: dict, times: int, fix):
        """Block `block` on `times` candidates stacked along the row axis of `hidden`.

        `kwargs` are what the decoder passed the block for one row batch (not repeated);
        `fix(module, x, out) -> out` sees every linear layer's input and output and may replace
        rows of the output (candidates with their own weights: the sparsity search). This
        generic version hooks the block's linear layers; an adapter that knows its block's math
        can run the linear layers itself and fuse what lies between them.
        """
        rows = hidden.shape[0] // times
        args = {k: capture._repeat_batch(v, rows, times) for k, v in kwargs.items()}
        handles = [m.register_forward_hook(lambda m, a, out: fix(m, a[0], out))
                   for m in self.linears(block).values()]
        try:
            return capture._hidden(self.blocks()[block](hidden, **args))
        finally:
            for h in handles:
                h.remove()

    def block_io(self, input_ids, attention_mask=None):
        """Each block's input and output hidden states (`evopress.models.capture.block_io`)."""
        return capture.block_io(self, input_ids, attention_mask)

    @property
    def plan(self) -> DropPlan:
        """The drop plan the model currently runs with."""
        n = self.num_blocks
        return DropPlan(
            tuple(self.is_dropped(i, "attn") for i in range(n)),
            tuple(self.is_dropped(i, "mlp") for i in range(n)),
        )

    def apply_plan(self, plan: DropPlan) -> int:
        """Switch the model to `plan`, touching only sublayers whose state changes (§2.8).

        Returns how many sublayers were swapped, so callers can see the switch cost.
        """
        self.check_plan(plan)
        changed = 0
        for kind, mask in (("attn", plan.attn), ("mlp", plan.mlp)):
            for block, dropped in enumerate(mask):
                if self.is_dropped(block, kind) != dropped:
                    self.set_dropped(block, kind, dropped)
                    changed += 1
        return changed

    def check_plan(self, plan: DropPlan) -> None:
        if plan.num_blocks != self.num_blocks:
            raise PlanError(
                f"the plan has {plan.num_blocks} blocks but the model has {self.num_blocks}; "
                "build the plan for this model (DropPlan.dense(adapter.num_blocks) is a start)"
            )

    @staticmethod
    def check_kind(kind: str) -> None:
        if kind not in SUBLAYER_KINDS:
            raise PlanError(f"unknown sublayer kind {kind!r}; use one of {SUBLAYER_KINDS}")
