"""What a run leaves behind for people: the summary table, the plots (PNG) and report.md."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window: runs happen on headless machines
import matplotlib.pyplot as plt  # noqa: E402


def table(rows: list[dict], columns: list[tuple[str, str]]) -> str:
    """Plain-text table: `columns` is a list of (key, heading); floats get 4 significant digits."""

    cells = [[_cell(r.get(k, "")) for k, _ in columns] for r in rows]
    heads = [h for _, h in columns]
    widths = [max(len(x) for x in col) for col in zip(heads, *cells)]
    line = lambda xs: "  ".join(x.ljust(w) for x, w in zip(xs, widths)).rstrip()  # noqa: E731
    return "\n".join([line(heads), line(["-" * w for w in widths])] + [line(c) for c in cells])


def _cell(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def markdown_table(rows: list[dict], columns: list[tuple[str, str]]) -> str:
    """The same table in Markdown."""
    lines = ["| " + " | ".join(h for _, h in columns) + " |", "|" + "---|" * len(columns)]
    return "\n".join(lines + ["| " + " | ".join(_cell(r.get(k, "")).replace("|", "\\|") for k, _ in columns) + " |"
                              for r in rows])


def markdown_report(title: str, summary: list, plots: list[str], plans: dict, units: list[str],
                    sections: dict[str, object]) -> str:
    """A run's report.md: the final table, the plots, every plan's level per unit, then each of
    `sections` (settings, versions, protocols ...): a sentence, or a block of YAML."""
    import yaml

    rows, columns = summary
    out = [f"# {title}", "", markdown_table(rows, columns), ""]
    out += [f"![{Path(p).stem}]({p})" for p in plots] + [""]
    names = list(plans)
    levels = [{"unit": u, **{n: plans[n]["levels"].get(u, "") for n in names}} for u in units]
    out += ["## Per-unit levels", "", markdown_table(levels, [("unit", "unit")] + [(n, n) for n in names]), ""]
    for heading, value in sections.items():
        if isinstance(value, str):
            out += [f"## {heading}", "", value, ""]
            continue
        text = yaml.safe_dump(value, sort_keys=False, width=100).rstrip()
        out += [f"## {heading}", "", "```yaml", text, "```", ""]
    return "\n".join(out)


def profile_plot(plans: dict[str, dict], path: Path, title: str) -> Path:
    """Which sublayers each method drops, block by block (one row of cells per method and kind)."""
    names = list(plans)
    n = len(next(iter(plans.values()))["attn"])
    fig, ax = plt.subplots(figsize=(max(6, 0.45 * n + 2), 0.7 * len(names) * 2 + 1.2))
    labels = []
    for row, name in enumerate(names):
        for k, kind in enumerate(("attn", "mlp")):
            y = 2 * row + k
            mask = plans[name][kind]
            colours = ["#d62728" if d else "#e8e8e8" for d in mask]
            ax.barh([y] * n, [0.9] * n, left=range(n), color=colours, height=0.8)
            labels.append(f"{name} · {kind}")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xticks([i + 0.45 for i in range(n)], [str(i) for i in range(n)])
    ax.set_xlabel("decoder block (red = dropped)")
    ax.invert_yaxis()
    return _save(fig, ax, path, title)


def convergence_plot(history: list[dict], path: Path, ylabel: str) -> Path:
    """The parent's fitness after each generation (noisy by design: re-scored on fresh tokens)."""
    gens = [h["gen"] for h in history if h["phase"] == "evolve"]
    fits = [h["fitness"] for h in history if h["phase"] == "evolve"]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(gens, fits, marker="o", markersize=3)
    init = [h["fitness"] for h in history if h["phase"] == "init"]
    if init:
        ax.axhline(init[0], color="grey", linestyle="--", label="initial best of random")
        ax.legend()
    ax.set_xlabel("generation")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_ylabel(ylabel)
    return _save(fig, ax, path, "EvoPress search")


def block_plot(methods: dict[str, tuple], path: Path, title: str, ylabel: str = "sparsity (%)",
               factor: float = 100.0) -> Path:
    """A per-unit figure averaged per decoder block, weighted by size, one line per method;
    `methods[name] = (blocks, values, sizes)`, values shown × `factor`."""
    fig, ax = plt.subplots(figsize=(7, 3.8))
    for name, (blocks, values, sizes) in methods.items():
        ids = sorted(set(blocks))
        per_block = []
        for b in ids:
            parts = [(s, n) for blk, s, n in zip(blocks, values, sizes) if blk == b]
            per_block.append(factor * sum(s * n for s, n in parts) / sum(n for _, n in parts))
        ax.plot(ids, per_block, marker="o", markersize=3, label=name)
    ax.set_xlabel("decoder block")
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    return _save(fig, ax, path, title)


def kind_plot(methods: dict[str, tuple], path: Path, title: str, ylabel: str = "bits per weight") -> Path:
    """The same figure per projection kind (q_proj, ..., down_proj), as grouped bars;
    `methods[name] = (kinds, values, sizes)`."""
    import numpy as np

    names = list(methods)
    kinds = list(dict.fromkeys(k for ks, _, _ in methods.values() for k in ks))
    fig, ax = plt.subplots(figsize=(7, 3.8))
    width = 0.8 / max(1, len(names))
    for j, name in enumerate(names):
        ks, values, sizes = methods[name]
        means = []
        for kind in kinds:
            parts = [(v, n) for k, v, n in zip(ks, values, sizes) if k == kind]
            means.append(sum(v * n for v, n in parts) / sum(n for _, n in parts))
        ax.bar(np.arange(len(kinds)) + j * width, means, width, label=name)
    ax.set_xticks(np.arange(len(kinds)) + 0.4 - width / 2, kinds, fontsize=8)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    return _save(fig, ax, path, title)


def _save(fig, ax, path: Path, title: str) -> Path:
    """Title the axes, write the figure as a PNG and free it."""
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
