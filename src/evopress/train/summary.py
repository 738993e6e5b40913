"""What `evopress train` leaves for people: train_report.json, train_report.md and loss.png."""

from __future__ import annotations

import dataclasses
import itertools
import json
from pathlib import Path

import torch

from evopress.config import plain
from evopress.report import _save, markdown_table, plt
from evopress.rundir import write_atomic


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


def write_report(cfg, out: Path, state: dict, after: dict, heldout: dict | None, device, log) -> dict:
    """Write the report files of a finished training into `out`; returns the report (as JSON)."""
    from evopress.run import versions

    history, per_step = state["history"], cfg.train.train_batch * cfg.seq_len
    window = max(1, min(10, len(history) // 10))  # start and end losses: means of a few steps, less noisy
    report = {
        "model": state["inputs"]["model"], "teacher": cfg.teacher or None, "out": str(out), "loss": cfg.train.loss,
        "steps": len(history), "tokens": len(history) * per_step, "seconds": round(state["seconds"], 3),
        "tokens_per_second": round(len(history) * per_step / max(state["seconds"], 1e-9), 1),
        "loss_start": mean(history[:window]), "loss_end": mean(history[-window:]), "loss_window_steps": window,
        "heldout": {"before": state["before"], "after": after, "protocol": heldout},
        "settings": plain(dataclasses.asdict(cfg)), "data": state["inputs"]["data"],
        "versions": versions(torch.device(device)), "history": history,
    }
    loss_plot(history, per_step, cfg.train.loss, out / "loss.png")
    write_atomic(out / "train_report.json", json.dumps(report, indent=1) + "\n")
    write_atomic(out / "train_report.md", markdown(report))
    log(summary_line(report))
    return report


def summary_line(report: dict) -> str:
    line = (f"trained {report['steps']} steps ({report['tokens']:,} tokens, {report['seconds']:.0f} s): "
            f"{report['loss']} loss {report['loss_start']:.4f} -> {report['loss_end']:.4f}")
    before, after = report["heldout"]["before"], report["heldout"]["after"]
    for key, name in (("ppl", "held-out ppl"), ("kl", "held-out KL")):
        if key in after:
            line += f"; {name} {before[key]:.4f} -> {after[key]:.4f}"
    return line + f"; model in {report['out']}"


def markdown(report: dict) -> str:
    import yaml

    rows = [{"when": when, **report["heldout"][when]} for when in ("before", "after") if report["heldout"][when]]
    columns = [("when", ""), ("ppl", "held-out perplexity")] + ([("kl", "held-out KL to the teacher (nats)")]
                                                                if any("kl" in r for r in rows) else [])
    facts = {k: report[k] for k in ("model", "teacher", "loss", "steps", "tokens", "seconds", "tokens_per_second",
                                    "loss_start", "loss_end", "loss_window_steps")}
    out = [f"# evopress train: {Path(report['model']).name}", "", summary_line(report), ""]
    if rows:
        out += [markdown_table(rows, columns), ""]
    out += ["![loss](loss.png)", ""]
    for heading, value in (("Training", facts), ("Settings", report["settings"]), ("Training data", report["data"]),
                           ("Held-out protocol", report["heldout"]["protocol"]), ("Versions", report["versions"])):
        text = yaml.safe_dump(value, sort_keys=False, width=100).rstrip()
        out += [f"## {heading}", "", "```yaml", text, "```", ""]
    return "\n".join(out)


def loss_plot(history: list[float], per_step: int, loss: str, path: Path) -> Path:
    """The training loss of every step (light) and its running mean, against tokens trained on."""
    span = max(1, len(history) // 50)
    sums = [0.0, *itertools.accumulate(history)]
    smooth = [(sums[i + 1] - sums[max(0, i + 1 - span)]) / min(span, i + 1) for i in range(len(history))]
    tokens = [(i + 1) * per_step for i in range(len(history))]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(tokens, history, color="#9ecae1", linewidth=0.8, label="per step")
    ax.plot(tokens, smooth, color="#08519c", label=f"mean of {span} steps")
    ax.set_xlabel("training tokens")
    ax.set_ylabel({"kd": "KL to the teacher (nats)", "lm": "cross-entropy (nats)"}[loss])
    ax.legend()
    return _save(fig, ax, path, "evopress train")
