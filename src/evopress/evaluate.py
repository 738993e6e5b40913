"""Stand-alone evaluation and re-export of a finished run (`evopress eval`, `evopress export`)."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from evopress.compress.depth import DropPlan
from evopress.config import RunConfig, from_dict
from evopress.errors import EvopressError, RecipeError


def read_plan(path: str | Path) -> DropPlan:
    path = Path(path)
    if path.is_dir():
        path = path / "plan.json"
    if not path.is_file():
        raise RecipeError(f"no plan at {path}; pass a run directory or its plan.json")
    return DropPlan.from_dict(json.loads(path.read_text()))


def evaluate_model(model: str, plan: str, data: str, seq_len: int, tokens: int, device: str, dtype: str,
                   tasks: str = "") -> dict:
    """Held-out perplexity (GPTQ convention, protocol printed with it) and optional lm-eval tasks."""
    from evopress.data import load_tokens
    from evopress.eval.metrics import perplexity
    from evopress.models import adapter_for, load_model
    from evopress.session import resolve_device, resolve_model

    path = resolve_model(model)
    m, tokenizer = load_model(path, dtype=dtype, device=resolve_device(device))
    adapter = adapter_for(m)
    if plan:
        p = read_plan(plan)
        if p.num_blocks != adapter.num_blocks:
            raise RecipeError(f"plan has {p.num_blocks} blocks but the model has {adapter.num_blocks}; "
                              "apply a plan to the model it was searched on (not to an exported one)")
        adapter.apply_plan(p)
    heldout = load_tokens(data, tokenizer, "heldout", seq_len, tokens, 0).to(next(m.parameters()).device)
    ppl = perplexity(m, heldout)
    out = {"model": path, "plan": plan or None, "ppl": ppl,
           "protocol": {"source": data, "split": "heldout", "seq_len": seq_len, "sequences": int(heldout.shape[0]),
                        "windows": "non-overlapping", "normalisation": "token-level mean NLL, exp"}}
    print(f"held-out perplexity {ppl:.4f}  ({data}, heldout split, {heldout.shape[0]} x {seq_len} tokens)")
    if tasks:
        from evopress.eval.downstream import run_tasks
        out["tasks"] = run_tasks(m, tokenizer, tasks.split(","))
        print(json.dumps(out["tasks"], indent=2))
    return out


def export_run(run_dir: Path, fmt: str, out: Path | None = None) -> dict:
    """Export a run's best plan again, e.g. in another format, without searching again."""
    from evopress.export import export
    from evopress.models import adapter_for, load_model
    from evopress.session import resolve_device, resolve_model

    config = run_dir / "config.yaml"
    if not config.is_file():
        raise EvopressError(f"{run_dir} is not a run directory (no config.yaml); run `evopress drop` first")
    cfg = from_dict(RunConfig, yaml.safe_load(config.read_text()), str(config))
    plan = read_plan(run_dir)
    model, tokenizer = load_model(resolve_model(cfg.model), dtype=cfg.dtype, device=resolve_device(cfg.device))
    adapter = adapter_for(model)
    adapter.apply_plan(plan)
    report = export(adapter, plan, tokenizer, out or run_dir / f"model-{fmt}", fmt=fmt)
    print(f"exported {fmt} model to {report.path}")
    return vars(report)
