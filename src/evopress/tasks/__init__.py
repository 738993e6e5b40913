"""Which downstream tasks `evopress eval --tasks` runs: presets, lm-eval task names, folders of YAMLs.

    spec = parse_tasks("zoo")                 # the suite shipped in this package (offline)
    spec = parse_tasks("zeroshot5")           # the EvoPress paper's five zero-shot tasks (HF hub data)
    spec = parse_tasks("arc_easy,piqa")       # lm-eval task, group or tag names
    spec = parse_tasks("path/to/my_tasks")    # every task a folder of lm-eval YAMLs defines

Items are comma-separated and can be mixed. Preset names win over paths, so a folder called `zoo`
is passed as `./zoo`. The `zoo` suite (see `build.py`) is built from held-out files of the built-in
corpus and needs no download; `zeroshot5` is the set reported by EvoPress (Sieberling et al., arXiv
2410.14649): arc_easy, arc_challenge, hellaswag, piqa and winogrande, 0-shot.

This module needs neither torch nor lm-eval: it only reads names and YAML files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from evopress.errors import RecipeError

ZEROSHOT5 = ("arc_easy", "arc_challenge", "hellaswag", "piqa", "winogrande")
SUITES = {"zoo": Path(__file__).with_name("zoo")}  # presets shipped as task folders in this package
PRESETS = {"zeroshot5": ZEROSHOT5}  # presets that are lists of lm-eval's own task names


@dataclass(frozen=True)
class TaskSpec:
    """What to run: lm-eval task names, the folders that define some of them, the shipped suites among those."""

    names: tuple[str, ...]
    folders: tuple[Path, ...] = ()
    suites: tuple[str, ...] = ()


def suite_dir(name: str) -> Path:
    """The folder of the shipped suite `name` (task YAMLs and their JSONL data)."""
    if name not in SUITES:
        raise RecipeError(f"no shipped task suite {name!r}; there is {', '.join(SUITES)}")
    return SUITES[name]


def parse_tasks(text: str) -> TaskSpec:
    """Turn a `--tasks` value into a TaskSpec; an empty item or a folder without tasks is an error."""
    names, folders, suites = [], [], []
    for item in (part.strip() for part in str(text).split(",")):
        if not item:
            raise RecipeError(f"--tasks {text!r} has an empty item; give comma-separated names without gaps")
        if item in SUITES:
            suites.append(item)
            names += folder_tasks(suite_dir(item))
        elif item in PRESETS:
            names += PRESETS[item]
        elif Path(item).expanduser().is_dir():
            folder = Path(item).expanduser().resolve()
            folders.append(folder)
            names += folder_tasks(folder)
        elif "/" in item or item.endswith((".yaml", ".yml")):
            raise RecipeError(f"--tasks {item!r} looks like a path but is not a folder; give a folder of task YAMLs")
        else:
            names.append(item)
    return TaskSpec(tuple(dict.fromkeys(names)), tuple(folders), tuple(suites))


class _TagsAsText(yaml.SafeLoader):
    """A safe loader that reads lm-eval's `!function module.name` (and any other tag) as plain text."""


_TagsAsText.add_multi_constructor("!", lambda loader, tag, node: loader.construct_scalar(node)
                                  if isinstance(node, yaml.ScalarNode) else None)


def folder_tasks(folder: Path) -> list[str]:
    """The tasks and groups a folder of lm-eval YAMLs defines, by name, in file order.

    A task that belongs to a group defined in the same folder runs through its group only."""
    tasks, groups, members = [], [], set()
    for path in sorted(Path(folder).rglob("*.yaml")):
        try:
            cfg = yaml.load(path.read_text(encoding="utf-8"), Loader=_TagsAsText)
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
            raise RecipeError(f"task file {path} cannot be read as YAML: {e}") from e
        if not isinstance(cfg, dict):
            continue
        if isinstance(cfg.get("group"), str) and isinstance(cfg.get("task"), list):
            groups.append(cfg["group"])
            members.update(t for t in cfg["task"] if isinstance(t, str))
        elif isinstance(cfg.get("task"), str):
            tasks.append(cfg["task"])
    names = groups + [t for t in tasks if t not in members]
    if not names:
        raise RecipeError(f"{folder} defines no lm-eval task (no YAML file with a `task:` name in it)")
    return names


def copy_suite(name: str, out_dir: Path) -> dict[Path, Path]:
    """Write the shipped suite's YAMLs to `out_dir` with their data files as absolute paths.

    The shipped YAMLs name their data relative to their own folder, which lm-eval would resolve
    against the working directory; the copies point at the installed files. Returns {copy: original}.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    copies = {}
    for path in sorted(suite_dir(name).glob("*.yaml")):
        cfg = yaml.safe_load(path.read_text(encoding="utf-8"))
        files = cfg["dataset_kwargs"]["data_files"]
        cfg["dataset_kwargs"]["data_files"] = {split: str(path.parent / f) for split, f in files.items()}
        copy = out_dir / path.name
        copy.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
        copies[copy] = path
    return copies
