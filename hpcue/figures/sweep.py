"""A sweep report's figures: per data set, victim accuracy against the global batch, and stage-1
throughput against the world size.

Drawn from the report's rows (``sweep/report.py``: one per config, with each seed's
unlearnable accuracy in ``_unlearnable_runs``) and the lines ``sweep/report_plots.py`` groups
them into: which rows make a line is decided there, apart from the drawing, so it can be tested.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from hpcue.figures.canvas import encode, pyplot

#: each seed's marker sits this factor right of its mean's error bar (the axis is log 2)
SEED_OFFSET = 2 ** 0.06
#: how a report's figures are written: the whole figure (the legend right of the axes too)
SAVE = {"dpi": 120, "bbox_inches": "tight"}


@dataclass
class Line:
    """One line of a batch plot: rows of one config, ascending global batch."""

    dataset: str
    label: str
    rows: list[dict] = field(default_factory=list)


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


def batch_figure(dataset: str, lines: list[Line], rows: list[dict],
                 chance: float | None) -> Any:
    """The figure ``draw_batch_plot`` writes (open: the caller closes it)."""
    plt = pyplot()
    from matplotlib.ticker import NullLocator
    fig, ax = plt.subplots(figsize=(9, 4.5))
    seeds_labelled = False
    for line in lines:
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
    if chance is not None:
        ax.axhline(chance, color="gray", linewidth=1, linestyle="-.",
                   label=f"chance (1/{round(1 / chance)})")
    ax.set_xscale("log", base=2)
    batches = sorted({r["global_batch_size"] for r in rows})
    ax.set_xticks(batches, [str(b) for b in batches])  # the batch sizes, not powers of 2
    ax.xaxis.set_minor_locator(NullLocator())
    if len(batches) == 1:  # an octave either side, not matplotlib's sliver around one value
        ax.set_xlim(batches[0] / 2, batches[0] * 2)
    _label(ax, "global batch size", "victim accuracy on the clean test set",
           f"{dataset}: mean ± std over seeds (lower unlearnable is better)",
           outside=True)
    fig.tight_layout()
    return fig


def draw_batch_plot(dataset: str, lines: list[Line], rows: list[dict], chance: float | None,
                    formats: tuple[str, ...] = ("png", "pdf")) -> dict[str, bytes]:
    """One data set's accuracy against the global batch, as each of ``formats``: each line's
    clean, unlearnable and random-noise mean ± std, each seed's unlearnable accuracy, and
    ``chance`` (None: not drawn). ``rows``: the data set's rows (its batch sizes)."""
    return encode(batch_figure(dataset, lines, rows, chance), formats, **SAVE)


def throughput_figure(rows: list[dict]) -> Any:
    """The figure ``draw_throughput`` writes (open: the caller closes it)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    every_world: set[int] = set()
    highest = 0.0
    for dataset in sorted({r["dataset"] for r in rows}):
        by_world: dict[int, list[float]] = defaultdict(list)
        for r in rows:
            if r["dataset"] == dataset:
                by_world[r["world_size"]].append(r["stage1_images_per_second"])
        worlds = sorted(by_world)
        every_world.update(worlds)
        highest = max(highest, *(max(by_world[w]) for w in worlds))
        means = [statistics.mean(by_world[w]) for w in worlds]
        spread = [[m - min(by_world[w]) for w, m in zip(worlds, means, strict=True)],
                  [max(by_world[w]) - m for w, m in zip(worlds, means, strict=True)]]
        ax.errorbar(worlds, means, yerr=spread, marker="o", capsize=3, label=dataset)
    worlds = sorted(every_world)
    ax.set_xticks(worlds, [str(w) for w in worlds])  # ranks are whole: no 1.975
    if len(worlds) == 1:  # room around one world size, not matplotlib's sliver around it
        ax.set_xlim(worlds[0] - 1, worlds[0] + 1)
    # a rate: its scale from zero, never a sliver around one value; room above the highest
    ax.set_ylim(0, highest * 1.15 or 1.0)
    _label(ax, "world size (ranks)", "stage-1 images per second",
           "Throughput against world size (mean, range over its runs)")
    fig.tight_layout()
    return fig


def draw_throughput(rows: list[dict]) -> bytes:
    """PNG: stage-1 images per second against the world size, one line per data set (the
    mean over its rows at each world size, and their range)."""
    return encode(throughput_figure(rows), ("png",), **SAVE)["png"]
