"""The report's plots: accuracy against the global batch per data set, and throughput.

A line joins the rows of one configuration that differ only in their global batch (and the
effective lr their lr rule gives it): never two lr rules, two eps, two K or two settings, which
drawn as one line would zigzag between configs and read as an effect of the batch. Which rows
make a line is decided by ``batch_lines``, apart from the drawing, so it can be tested.
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hpcue.io import atomic_write
from hpcue.sweep.points import slug
from hpcue.sweep.report_tables import eps_255

#: what, beside the settings, a line keeps fixed: row key -> how a label names its value
LINE_FACTS = {"lr_scaling": lambda v: f"lr {v}", "epsilon": lambda v: f"eps {eps_255(v)}",
              "num_clusters": lambda v: f"K {v}", "victim_epochs": lambda v: f"victim epochs {v}",
              "world_size": lambda v: f"world {v}", "base_lr": lambda v: f"base lr {v:g}"}

#: each seed's marker sits this factor right of its mean's error bar (the axis is log 2)
SEED_OFFSET = 2 ** 0.06


@dataclass
class Line:
    """One line of a batch plot: rows of one config, ascending global batch."""

    dataset: str
    label: str
    rows: list[dict] = field(default_factory=list)


def _line_key(row: dict) -> str:
    return json.dumps({"settings": row["_settings"],
                       **{k: row.get(k) for k in LINE_FACTS}}, sort_keys=True, default=str)


def batch_lines(rows: list[dict]) -> list[Line]:
    """The lines of every data set's batch plot; each label names what tells its line from
    the others of its data set (the setting label, and lr rule, eps, K, ... where they vary)."""
    lines = []
    for dataset in sorted({r["dataset"] for r in rows}):
        groups: dict[str, list[dict]] = defaultdict(list)
        for r in rows:
            if r["dataset"] == dataset:
                groups[_line_key(r)].append(r)
        firsts = [g[0] for g in groups.values()]
        varying = [k for k in LINE_FACTS if len({str(r.get(k)) for r in firsts}) > 1]
        seen: dict[str, int] = defaultdict(int)
        for members in groups.values():
            first = members[0]
            parts = [first["setting"]] if first["setting"] else []
            parts += [LINE_FACTS[k](first.get(k)) if first.get(k) is not None else f"{k} -"
                      for k in varying]
            label = ", ".join(parts)
            seen[label] += 1
            if seen[label] > 1:  # settings the label does not show (a column's key): keep apart
                label = f"{label} #{seen[label]}".strip()
            lines.append(Line(dataset, label,
                              sorted(members, key=lambda r: r["global_batch_size"])))
    return lines


def chance(rows: list[dict]) -> float | None:
    """1 / number of classes, if every row of these (one data set's) knows it and agrees."""
    classes = {r.get("num_classes") for r in rows}
    return 1 / classes.pop() if len(classes) == 1 and None not in classes else None


def _save(fig: Any, path: Path, formats: tuple[str, ...]) -> list[Path]:
    """The figure as each format beside ``path`` (its suffix replaced), atomically."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    paths = []
    for fmt in formats:
        target = path.with_suffix(f".{fmt}")
        atomic_write(target, lambda tmp, fmt=fmt: fig.savefig(tmp, format=fmt, dpi=120,
                                                              bbox_inches="tight"))
        paths.append(target)
    plt.close(fig)
    return paths


def _label(ax: Any, xlabel: str, ylabel: str, title: str, outside: bool = False) -> None:
    """Axis labels, title, legend; ``outside``: the legend right of the axes, where it never
    hides a point (a sweep's plot has a legend entry per line and accuracy)."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    if outside:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    else:
        ax.legend(fontsize=7)


def _errorbar(ax: Any, line: Line, name: str, tag: str, **style: Any) -> Any:
    xs = [r["global_batch_size"] for r in line.rows]
    return ax.errorbar(xs, [r[f"{name}_mean"] for r in line.rows],
                       yerr=[r[f"{name}_std"] or 0 for r in line.rows], **style,
                       label=" ".join(t for t in (tag, line.label) if t))


def plot(rows: list[dict], out: Path) -> tuple[list[Path], Path]:
    """Per data set, accuracy against the global batch (PNG and PDF): each line's clean,
    unlearnable and random-noise mean ± std, each seed's unlearnable accuracy, chance; and
    stage-1 throughput against the world size (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines = batch_lines(rows)
    paths = []
    for dataset in sorted({r["dataset"] for r in rows}):
        fig, ax = plt.subplots(figsize=(9, 4.5))
        seeds_labelled = False
        for line in (ln for ln in lines if ln.dataset == dataset):
            unl = _errorbar(ax, line, "unlearnable_test_acc", "unlearnable", marker="o",
                            capsize=3)
            color = unl[0].get_color()
            seed_xs = [r["global_batch_size"] * SEED_OFFSET for r in line.rows
                       for _ in r["_unlearnable_runs"]]
            seed_ys = [acc for r in line.rows for acc in r["_unlearnable_runs"]]
            ax.scatter(seed_xs, seed_ys, s=9, color=color, alpha=0.45, zorder=3,
                       label=None if seeds_labelled else "each seed (unlearnable)")
            seeds_labelled = True
            _errorbar(ax, line, "clean_test_acc", "clean", linestyle="--", marker=".",
                      capsize=2, color=color)
            if all(r["random_test_acc_mean"] is not None for r in line.rows):
                _errorbar(ax, line, "random_test_acc", "random noise", linestyle=":",
                          marker="x", capsize=2, color=color)
        mine = [r for r in rows if r["dataset"] == dataset]
        level = chance(mine)
        if level is not None:
            ax.axhline(level, color="gray", linewidth=1, linestyle="-.",
                       label=f"chance (1/{round(1 / level)})")
        ax.set_xscale("log", base=2)
        batches = sorted({r["global_batch_size"] for r in mine})
        ax.set_xticks(batches, [str(b) for b in batches])  # the batch sizes, not powers of 2
        _label(ax, "global batch size", "victim accuracy on the clean test set",
               f"{dataset}: mean ± std over seeds (lower unlearnable is better)",
               outside=True)
        paths += _save(fig, out / f"accuracy_vs_batch-{slug(dataset)}.png", ("png", "pdf"))

    fig, ax = plt.subplots(figsize=(6, 4))
    for dataset in sorted({r["dataset"] for r in rows}):
        by_world: dict[int, list[float]] = defaultdict(list)
        for r in rows:
            if r["dataset"] == dataset:
                by_world[r["world_size"]].append(r["stage1_images_per_second"])
        worlds = sorted(by_world)
        ax.plot(worlds, [statistics.mean(by_world[w]) for w in worlds], marker="o",
                label=dataset)
    _label(ax, "world size (ranks)", "stage-1 images per second",
           "Throughput against world size")
    (throughput,) = _save(fig, out / "throughput_vs_world_size.png", ("png",))
    return paths, throughput
