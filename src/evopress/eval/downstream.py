"""Downstream tasks through lm-evaluation-harness on the in-memory (pruned) model, 0-shot.

`evopress eval --tasks` takes what `evopress.tasks.parse_tasks` reads: the shipped `zoo` suite
(offline), `zeroshot5` (the EvoPress paper's arc_easy, arc_challenge, hellaswag, piqa, winogrande;
data from the Hugging Face hub), lm-eval task names, or folders of task YAMLs. Every task is loaded
before the model runs, one at a time, so a data set that cannot be had (offline, no warm cache) is
a `DataError` naming it and the fix. The record holds lm-eval's version and, per task, a sha256 of
its YAML and of its data files, so a number can be traced to exactly what produced it.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from evopress.database.store import sha256
from evopress.errors import DataError, EvopressError, RecipeError
from evopress.tasks import TaskSpec, copy_suite, parse_tasks

OFFLINE_FIX = ("lm-eval reads this data from the Hugging Face hub: run the same command once with a network to "
               "fill the datasets cache, or point HF_DATASETS_CACHE at a warm cache (HF_DATASETS_OFFLINE=1 then "
               "skips the network); `--tasks zoo` needs no download")


def require_lm_eval():
    """The lm_eval module, or an error that says how to install it."""
    try:
        import lm_eval
        from lm_eval.models.huggingface import HFLM  # noqa: F401  (needs the [hf] extra: accelerate, peft)
    except ImportError as e:
        raise EvopressError(f"--tasks needs lm-eval, which cannot be imported here ({e}); "
                            "run `pip install evopress[eval]`") from e
    return lm_eval


def check_tasks(tasks: str | TaskSpec) -> TaskSpec:
    """Parse `--tasks` and check that lm-eval is there, before any model loads."""
    spec = parse_tasks(tasks) if isinstance(tasks, str) else tasks
    require_lm_eval()
    return spec


def run_tasks(model, tokenizer, tasks: str | TaskSpec, batch_size: int = 32, limit: int | None = None) -> dict:
    """Run `tasks` 0-shot on `model`: per task its metrics with standard errors, versions and hashes."""
    spec = check_tasks(tasks)
    lm_eval = require_lm_eval()
    import datasets  # lm-eval's own dependency: its version goes into the record
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    with tempfile.TemporaryDirectory(prefix="evopress-tasks-") as tmp:
        originals = {}
        for suite in spec.suites:
            originals.update(copy_suite(suite, Path(tmp) / suite))
        include = [*map(str, spec.folders), *sorted({str(p.parent) for p in originals})]
        manager = TaskManager(include_path=include or None)
        loaded = load_tasks(manager, spec.names)
        hashes = {name: task_hashes(manager, name, task, originals) for name, task in leaf_tasks(loaded).items()}
        lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
        out = lm_eval.simple_evaluate(model=lm, tasks=[obj for objs in loaded.values() for obj in objs],
                                      num_fewshot=0, limit=limit, task_manager=manager, log_samples=False)
    return {"tasks": list(spec.names), "results": metrics(out["results"]), "hashes": hashes,
            "versions": dict(out.get("versions", {})), "n-shot": dict(out.get("n-shot", {})),
            "n-samples": dict(out.get("n-samples", {})), "limit": limit, "batch_size": batch_size,
            "lm_eval": lm_eval.__version__, "datasets": datasets.__version__}


def load_tasks(manager, names) -> dict[str, list]:
    """{name: its top-level lm-eval objects}; each name loads alone, so a failure names its own data."""
    unknown = [n for n in names if n not in manager.all_tasks]
    if unknown:
        import difflib

        hints = {n: difflib.get_close_matches(n, manager.all_tasks, n=3) for n in unknown}
        said = "; ".join(repr(n) + (f" (did you mean {', '.join(h)}?)" if h else "") for n, h in hints.items())
        raise RecipeError(f"unknown lm-eval task {said}: give a preset (zoo, zeroshot5), names that "
                          "`lm_eval ls tasks` lists, or a folder of task YAMLs")
    loaded = {}
    for name in names:
        try:
            result = manager.load([name])
        except Exception as e:  # datasets raises ConnectionError, FileNotFoundError, ValueError, ...
            raise missing_data(manager, name, e) from e
        loaded[name] = [result["groups"][name]] if name in result["groups"] else list(result["tasks"].values())
    return loaded


def leaf_tasks(loaded: dict[str, list]) -> dict:
    """{task name: Task} of every task that runs, groups opened."""
    out = {}
    for objs in loaded.values():
        for obj in objs:
            for task in obj.get_all_tasks() if hasattr(obj, "get_all_tasks") else [obj]:
                out[task.task_name] = task
    return out


def datasets_of(manager, name: str, depth: int = 0) -> list[dict]:
    """The data (dataset_path, dataset_name, data_files) behind a task, group or tag name."""
    entry = manager.task_index.get(name)
    if entry is None or depth > 8:
        return []
    cfg = entry.cfg or {}
    if cfg.get("dataset_path"):
        files = (cfg.get("dataset_kwargs") or {}).get("data_files")
        return [{"dataset_path": cfg["dataset_path"], "dataset_name": cfg.get("dataset_name"), "data_files": files}]
    kind = entry.kind.name
    members = cfg.get("task") if kind == "GROUP" else sorted(entry.tags) if kind == "TAG" else []
    return [d for m in members or () if isinstance(m, str) for d in datasets_of(manager, m, depth + 1)]


def describe(data: dict) -> str:
    if data["data_files"]:
        return f"the data files {data['data_files']}"
    return f"the data set {data['dataset_path']}" + (f" ({data['dataset_name']})" if data["dataset_name"] else "")


def missing_data(manager, name: str, error: Exception) -> EvopressError:
    """The error for a task lm-eval cannot load: which data it wanted and how to get it."""
    reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
    data = datasets_of(manager, name)
    if not isinstance(error, OSError) or not data:  # not a missing file or an unreachable hub
        return RecipeError(f"lm-eval could not load task {name!r}: {type(error).__name__}: {reason}")
    wanted = "; ".join(dict.fromkeys(describe(d) for d in data))
    if all(d["data_files"] for d in data):
        fix = "check the paths in its YAML (lm-eval reads relative paths from the working directory)"
    else:
        fix = OFFLINE_FIX
    return DataError(f"task {name!r} needs {wanted}, which could not be loaded ({reason}). {fix}")


def task_hashes(manager, name: str, task, originals: dict[Path, Path]) -> dict:
    """sha256 of the task's YAML (the shipped file for the zoo suite) and of each of its data files."""
    entry = manager.task_index.get(name)
    path = Path(entry.yaml_path) if entry is not None and entry.yaml_path else None
    path = originals.get(path, path)
    return {"yaml": str(path) if path else None, "yaml_sha256": sha256(path) if path else None,
            "data": data_hashes(task)}


def data_hashes(task) -> dict[str, str]:
    """{file: sha256}: the local data files a YAML names, else the datasets cache files lm-eval read."""
    files = (task.config.dataset_kwargs or {}).get("data_files")
    if files:
        values = files.values() if isinstance(files, dict) else [files]
        paths = [p for v in values for p in ([v] if isinstance(v, str) else v)]
        return {str(Path(p).resolve()): sha256(Path(p)) for p in paths}
    dataset = getattr(task, "dataset", None) or {}
    return {c["filename"]: sha256(Path(c["filename"]))
            for split in dataset.values() for c in getattr(split, "cache_files", [])}


def metrics(results: dict) -> dict:
    """{task: {metric: {"value", "stderr"}}} from lm-eval's "metric,filter" keys (stderr None where it has none)."""
    out = {}
    for task, row in results.items():
        out[task] = {}
        for key, value in row.items():
            if "," not in key or "_stderr," in key or not isinstance(value, (int, float)):
                continue
            metric, filt = key.split(",", 1)
            stderr = row.get(f"{metric}_stderr,{filt}")
            out[task][metric if filt == "none" else key] = {
                "value": value, "stderr": stderr if isinstance(stderr, (int, float)) else None}
    return out


def task_lines(record: dict) -> list[str]:
    """A header, then one line per task and metric: `zoo_completion  acc 0.612 ± 0.022`."""
    width = max(map(len, record["results"]), default=0)
    lines = [f"lm-eval {record['lm_eval']}, 0-shot" + (f", at most {record['limit']} items per task"
                                                       if record["limit"] else "")]
    for task, row in record["results"].items():
        for metric, m in row.items():
            err = f" ± {m['stderr']:.3f}" if m["stderr"] is not None else "  (lm-eval gives no stderr for it)"
            lines.append(f"{task:<{width}}  {metric} {m['value']:.3f}{err}")
    return lines
