"""Export: write a depth-pruned model as a directory that real loaders read.

FORMATS (what loads where; docs/export.md names the test behind each line):

  format        whole block dropped   attn or mlp only dropped           tested in
  hf            deleted, renumbered   kept, output projection zeroed     transformers 5.17 and newest,
                                      (exact; costs full compute)        vLLM 0.32 (CPU)
  nemotron-nas  deleted, renumbered   no_op, weights absent              transformers (remote code),
                                      (exact; saves bytes and compute)   vLLM 0.32 (CPU; not with block
                                                                         0's attention dropped)

Both write `evopress_plan.json` next to the weights: the plan, its per-block description and the
map from original to exported block indices. Structured pruning (heads and channels, `evopress
prune`) has its own writer for the physically smaller model: `evopress.export.pruned` ("pruned",
and "nemotron-nas" from per-layer sizes). `LOADERS` are the runtimes a test loads the format
in; `UNTESTED` the ones that read the layout by their documentation, which no test here runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from evopress.errors import ExportError

LOADERS = {
    "hf": ("transformers AutoModelForCausalLM", "vLLM"),
    "nemotron-nas": ("transformers AutoModelForCausalLM with trust_remote_code=True",
                     "vLLM (DeciLMForCausalLM, trust_remote_code; not with block 0's attention dropped)"),
}
UNTESTED = {
    "hf": ("SGLang", "TGI", "TensorRT-LLM", "llama.cpp (convert_hf_to_gguf)"),
    "nemotron-nas": ("SGLang", "TensorRT-LLM", "llama.cpp (GGUF arch 'deci')"),
}
FORMATS = tuple(LOADERS)


@dataclass(frozen=True)
class ExportReport:
    path: Path
    format: str
    bytes_on_disk: int
    loaders: tuple[str, ...]

    def summary(self) -> str:
        size = f"{self.bytes_on_disk / 2**20:.1f} MiB"
        return (f"{self.format} export at {self.path} ({size}); tested in {', '.join(self.loaders)}; "
                f"also read by (not tested) {', '.join(UNTESTED[self.format])}")


def export(adapter, plan, tokenizer, out_dir, fmt: str = "hf", overwrite: bool = False) -> ExportReport:
    """Write `adapter`'s model with `plan` applied to `out_dir` in format `fmt` (see FORMATS).

    The in-memory model is not changed. `overwrite=True` replaces an earlier evopress export.
    """
    from evopress.export.deci import export_nemotron_nas
    from evopress.export.directory import bytes_on_disk
    from evopress.export.hf import export_hf

    writers = {"hf": export_hf, "nemotron-nas": export_nemotron_nas}
    if fmt not in writers:
        raise ExportError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")
    path = writers[fmt](adapter, plan, tokenizer, out_dir, overwrite=overwrite)
    return ExportReport(path=path, format=fmt, bytes_on_disk=bytes_on_disk(path), loaders=LOADERS[fmt])


def weight_size(adapter, plan, fmt: str) -> tuple[int, int]:
    """(parameters, bytes) of the tensors an export of `plan` in `fmt` holds (bytes: the safetensors
    data, headers aside)."""
    from evopress.export.deci import deci_state
    from evopress.export.plan_file import renumbered_tensors
    from evopress.export.shards import untie

    if fmt == "nemotron-nas":
        state = deci_state(adapter, plan, adapter.geometry())
    elif fmt == "hf":  # zeroed projections keep their size
        state = {name: t for name, *_, t in renumbered_tensors(adapter, plan)}
    else:
        raise ExportError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")
    tensors = untie(state).values()
    return sum(t.numel() for t in tensors), sum(t.numel() * t.element_size() for t in tensors)


__all__ = ["export", "weight_size", "ExportReport", "FORMATS", "LOADERS", "UNTESTED"]
