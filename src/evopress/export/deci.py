"""Export format "nemotron-nas": the DeciLM / Nemotron-NAS `block_configs` layout.

The portable way to ship EvoPress's sublayer-level depth pruning (§3.3, arXiv 2410.14649; ecosystem
§2.2): each layer's attention and MLP may be a `no_op`, and a no-op's weights (and pre-norm) are
absent from the checkpoint, so every dropped sublayer saves its bytes and its compute. vLLM,
SGLang, TensorRT-LLM and llama.cpp read the layout natively; transformers loads it with
`trust_remote_code=True` through the configuration and modeling files evopress ships
(`evopress/export/remote/`), copied next to the weights. Blocks with both sublayers dropped are
deleted outright, as in the "hf" format.

Nemotron-NAS checkpoints use Llama's tensor names, which are the names of the Llama-family
adapter's layout, so tensors are copied under their own names with renumbered blocks.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from evopress.errors import ExportError
from evopress.export.directory import staged
from evopress.export.plan_file import block_map, renumbered_tensors, write_plan_file
from evopress.export.remote.configuration_nemotron_nas import ffn_intermediate_size
from evopress.export.shards import save_shards

REMOTE_DIR = Path(__file__).parent / "remote"
REMOTE_FILES = ("configuration_nemotron_nas.py", "modeling_nemotron_nas.py")
AUTO_MAP = {
    "AutoConfig": "configuration_nemotron_nas.NemotronNasConfig",
    "AutoModelForCausalLM": "modeling_nemotron_nas.DeciLMForCausalLM",
}
NOTES = (
    "DeciLM / Nemotron-NAS block_configs: dropped sublayers are no_op and their weights are absent. "
    "Native in vLLM, SGLang, TensorRT-LLM and llama.cpp (GGUF arch 'deci'); transformers needs "
    "trust_remote_code=True (configuration/modeling files are included)."
)


def ffn_mult_for(intermediate_size: int, hidden_size: int) -> float:
    """The `ffn_mult` that maps back to exactly `intermediate_size` (DeciLM convention).

    Loaders compute find_multiple(int(2 * ffn_mult * hidden / 3), 256), and some round ffn_mult to
    6 decimals first, so the value must survive that rounding. Among values that work, prefer one
    whose product is the width itself (5.25 for Llama-3-8B, not 5.2, which only gets there by the
    round-up), then the fewest decimals.
    """
    exact = 1.5 * intermediate_size / hidden_size
    candidates = [round(exact, digits) for digits in range(1, 7)] + [exact]
    valid = [c for c in candidates
             if all(ffn_intermediate_size(v, hidden_size) == intermediate_size for v in (c, round(c, 6)))]
    direct = [c for c in valid if int(2 * c * hidden_size / 3) == intermediate_size]
    if direct or valid:
        return float((direct or valid)[0])
    raise ExportError(
        f"an MLP width of {intermediate_size} with hidden size {hidden_size} cannot be written as a "
        "Nemotron-NAS ffn_mult (widths must be multiples of 256 reachable by "
        "find_multiple(int(2*ffn_mult*hidden/3), 256)); export with format 'hf' instead"
    )


def _model_problem(geo) -> str | None:
    if geo.qk_norm:
        return f"{geo.model_type} normalises each query and key head (q_norm/k_norm)"
    if geo.sliding_window is not None and geo.sliding_window < geo.max_position_embeddings:
        return f"the model uses sliding-window attention (window {geo.sliding_window})"
    if geo.o_bias and not geo.qkv_bias:
        return "the attention output projection has a bias but q/k/v do not"
    return None


def plan_sizes(geo, plan) -> list[tuple[int, int, int]]:
    """(query heads, KV heads, MLP width) of every block under a depth plan, 0 for a dropped sublayer."""
    return [(0 if a else block.num_heads, 0 if a else block.num_kv_heads, 0 if m else block.intermediate_size)
            for block, a, m in zip(geo.blocks, plan.attn, plan.mlp)]


def sizes_problem(geo, sizes) -> str | None:
    """Why per-block sizes (0: absent) do not fit the layout, or None. MLP widths are checked as
    their ffn_mult is computed (`ffn_mult_for`)."""
    for i, (heads, kv_heads, _) in enumerate(sizes):
        if not heads:
            continue  # a dropped attention's shape does not matter
        if heads != geo.num_heads:
            return f"block {i} has {heads} query heads, but the format fixes {geo.num_heads} for all"
        if kv_heads < 1 or heads % kv_heads:
            return f"block {i}'s {heads} query heads cannot share {kv_heads} KV heads evenly"
    return None


def check_expressible(geo, plan=None, sizes=None) -> None:
    """Refuse, with the reason, a model and plan (or per-block sizes) the Nemotron-NAS layout cannot
    represent exactly.

    (MLP widths are checked as their ffn_mult is computed, see `ffn_mult_for`.)
    """
    sizes = plan_sizes(geo, plan) if sizes is None else sizes
    problem = _model_problem(geo) or sizes_problem(geo, sizes)
    if problem:
        raise ExportError(f"{problem}, which Nemotron-NAS cannot express; export with format 'hf' instead")


def expressible_width(width: int, hidden_size: int) -> bool:
    """Whether an MLP of `width` channels (0: absent, a no-op) has a Nemotron-NAS `ffn_mult`."""
    try:
        return width == 0 or ffn_mult_for(width, hidden_size) > 0
    except ExportError:
        return False


def block_configs(geo, sizes) -> list[dict]:
    """One `{attention, ffn}` entry per block with something left (a block with neither is deleted)."""
    entries = []
    for heads, kv_heads, width in sizes:
        if not heads and not width:
            continue
        # llama.cpp tells a no-op by n_heads_in_group / ffn_mult being null, vLLM by no_op: set both.
        attention = {"no_op": not heads, "replace_with_linear": False,
                     "n_heads_in_group": heads // kv_heads if heads else None}
        ffn = {"no_op": not width, "replace_with_linear": False,
               "ffn_mult": ffn_mult_for(width, geo.hidden_size) if width else None}
        entries.append({"attention": attention, "ffn": ffn})
    return entries


def _rope_fields(geo) -> dict:
    # transformers 5 reads rope_parameters; NVIDIA's configs and older runtimes read theta/scaling.
    rope = dict(geo.rope_parameters)
    scaling = {k: v for k, v in rope.items() if k != "rope_theta"}
    return {
        "rope_parameters": rope,
        "rope_theta": rope.get("rope_theta", 10000.0),
        "rope_scaling": None if rope.get("rope_type", "default") == "default" else scaling,
    }


def deci_config(geo, blocks: list[dict]) -> dict:
    return {"architectures": ["DeciLMForCausalLM"], "model_type": "nemotron-nas", "auto_map": AUTO_MAP,
            "block_configs": blocks, "num_hidden_layers": len(blocks), **llama_fields(geo)}


def llama_fields(geo) -> dict:
    """The Llama config fields every layout evopress writes with its own modeling code shares."""
    return {
        "hidden_size": geo.hidden_size,
        "num_attention_heads": geo.num_heads,
        "num_key_value_heads": geo.num_kv_heads,
        "head_dim": geo.head_dim,
        "intermediate_size": geo.intermediate_size,
        "vocab_size": geo.vocab_size,
        "hidden_act": geo.hidden_act,
        "rms_norm_eps": geo.rms_norm_eps,
        "max_position_embeddings": geo.max_position_embeddings,
        **_rope_fields(geo),
        # Llama's attention_bias covers q, k, v and o; a missing o bias is written as zeros.
        "attention_bias": geo.qkv_bias or geo.o_bias,
        "mlp_bias": geo.mlp_bias,
        "attention_dropout": 0.0,
        "tie_word_embeddings": geo.tie_word_embeddings,
        "bos_token_id": geo.bos_token_id,
        "eos_token_id": geo.eos_token_id,
        "pad_token_id": geo.pad_token_id,
        "use_cache": True,
        "dtype": geo.dtype,
        "torch_dtype": geo.dtype,
    }


def deci_state(adapter, plan, geo) -> dict:
    """Tensors of present sublayers only, blocks renumbered; zero o-biases where q/k/v have biases."""
    layout = adapter.layout
    new_index = block_map(plan)
    out = {}
    for name, block, rest, tensor in renumbered_tensors(adapter, plan):
        kind = None if block is None else layout.kind_of(rest)
        if kind is None or not getattr(plan, kind)[block]:
            out[name] = tensor
    add_zero_o_biases(layout, geo, out, [new for old, new in new_index.items() if not plan.attn[old]])
    return out


def add_zero_o_biases(layout, geo, state: dict, blocks) -> None:
    """Llama's `attention_bias` covers o_proj too: where q/k/v have biases and o has none (Qwen2),
    give each attention of `blocks` (indices in the export) a zero o bias, which adds nothing."""
    if not geo.qkv_bias or geo.o_bias:
        return
    like = next(t for t in state.values() if t.is_floating_point())
    for block in blocks:
        bias = torch.zeros(geo.hidden_size, dtype=like.dtype, device=like.device)
        state[f"{layout.block_prefix}{block}.{layout.output_projection['attn']}.bias"] = bias


def export_nemotron_nas(adapter, plan, tokenizer, out_dir, overwrite: bool = False) -> Path:
    """Write `plan` applied to `adapter`'s model in the Nemotron-NAS layout."""
    adapter.check_plan(plan)
    geo = adapter.geometry()
    check_expressible(geo, plan)
    config = deci_config(geo, block_configs(geo, plan_sizes(geo, plan)))
    out_dir = Path(out_dir)
    with staged(out_dir, overwrite) as scratch:
        write_remote_model(scratch, deci_state(adapter, plan, geo), config, adapter, tokenizer)
        write_plan_file(scratch, plan, "nemotron-nas", NOTES, adapter.name_or_path)
    return out_dir.expanduser().resolve()


def write_remote_model(scratch: Path, state: dict, config: dict, adapter, tokenizer) -> None:
    """Weights, config.json, the modeling files it names in `auto_map`, generation config, tokenizer."""
    save_shards(state, scratch)
    (scratch / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    for name in REMOTE_FILES:
        shutil.copyfile(REMOTE_DIR / name, scratch / name)
    adapter.save_generation_config(scratch)
    if tokenizer is not None:
        tokenizer.save_pretrained(scratch)
