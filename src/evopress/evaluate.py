"""Evaluation and re-export of a finished run of any method (`evopress eval`, `evopress export`)."""

from __future__ import annotations

import json
from pathlib import Path

from evopress.config import from_dict, replace
from evopress.errors import RecipeError
from evopress.rundir import RunDir


def run_dir_of(plan: str | Path) -> Path:
    """The run directory a `--plan` names: the directory itself or its plans.json."""
    path = Path(plan)
    if path.is_file() and path.name == "plans.json":
        return path.parent
    if path.is_file():
        raise RecipeError(f"{path} is not a run's plans.json; pass the run directory (or its plans.json)")
    if not (path / "plans.json").is_file():
        raise RecipeError(f"no plans.json in {path}; pass the --run-dir of a finished search")
    return path


def run_config(rd: RunDir, **changes):
    """The config a run directory records, with `changes`."""
    return replace(from_dict(rd.read_config(), str(rd.path / "config.yaml")), **changes)


def open_plan(rd: RunDir, name: str, cfg, log):
    """The run of `rd` under `cfg`, ready to apply its plan `name`, and that plan's genome."""
    from evopress.run import Run

    plans = rd.plans()["plans"]
    if name not in plans:
        raise RecipeError(f"{rd.path} has no plan {name!r}; it has {', '.join(plans) or 'none (search first)'}")
    return Run(cfg, log).open().prepare(), tuple(plans[name]["genome"])


def evaluate_model(model: str, plan: str, data: str, seq_len: int, tokens: int, device: str, dtype: str,
                   tasks: str = "", name: str = "EvoPress", log=print, out_path: str = "",
                   limit: int | None = None) -> dict:
    """Held-out perplexity (GPTQ convention, protocol printed with it) and optional lm-eval tasks.

    With `plan` (a run directory) the run's model gets its plan `name` applied, by the run's method.
    `tasks` is what `evopress.tasks.parse_tasks` reads (`zoo`, `zeroshot5`, names, folders); each
    task's metrics are printed with their standard errors, and the whole record (lm-eval version,
    per-task hashes of config and data) is returned and, with `out_path`, written there as JSON."""
    from evopress.data import load_tokens
    from evopress.eval.metrics import perplexity
    from evopress.models import load_model
    from evopress.models.loading import resolve_device
    from evopress.session import resolve_model

    spec = None
    if tasks:  # a bad --tasks or a missing lm-eval fails here, before the model loads
        from evopress.eval.downstream import check_tasks
        spec = check_tasks(tasks)
    if plan:
        rd = RunDir(run_dir_of(plan))
        cfg = run_config(rd, **({"model": model} if model else {}), device=device, dtype=dtype)
        r, genome = open_plan(rd, name, cfg, log)
        r.bank.apply(genome)
        m, tokenizer, path = r.session.model, r.session.tokenizer, r.cfg.model
    else:
        path = resolve_model(model or "zoo:tiny")
        m, tokenizer = load_model(path, dtype=dtype, device=resolve_device(device), require_tokenizer=True)
    heldout = load_tokens(data, tokenizer, "heldout", seq_len, tokens, 0).to(next(m.parameters()).device)
    ppl = perplexity(m, heldout, progress="held-out ppl")
    out = {"model": path, "plan": str(plan) if plan else None, "name": name if plan else None, "ppl": ppl,
           "protocol": {"source": data, "split": "heldout", "seq_len": seq_len, "sequences": int(heldout.shape[0]),
                        "windows": "non-overlapping", "normalisation": "token-level mean NLL, exp"}}
    print(f"held-out perplexity {ppl:.4f}  ({data}, heldout split, {heldout.shape[0]} x {seq_len} tokens)")
    if spec is not None:
        from evopress.eval.downstream import run_tasks, task_lines
        out["tasks"] = run_tasks(m, tokenizer, spec, limit=limit)
        print("\n".join(task_lines(out["tasks"])))
    if out_path:
        Path(out_path).parent.mkdir(parents=True, exist_ok=True)
        Path(out_path).write_text(json.dumps(out, indent=2) + "\n")
        print(f"results written to {out_path}")
    return out


def export_run(run_dir: Path, fmt: str, out: Path | None = None, name: str = "EvoPress", log=print) -> dict:
    """Export a run's plan again, e.g. in another format, without searching again (replaces an earlier one)."""
    from evopress.run import check, export

    rd = RunDir(run_dir)
    cfg = run_config(rd, export_format=fmt)
    check(cfg, ("export",))  # the format, before the model loads
    with rd.lock():
        r, genome = open_plan(rd, name, cfg, log)
        return export(r, genome, out or rd.path / f"model-{fmt}", fmt)
