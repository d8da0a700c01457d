"""The batch-size study's figure: three panels against the global batch, one line per
configuration (an optimizer, an lr rule, warmup), each point a mean with its 95% interval.

1. victim accuracy on the clean test set: UC (solid) and random noise of the same size
   (dotted), each seed's UC figure beside its mean; 2. UC below random, paired by victim seed
   (above 0: UC protects better than noise; the dashed line is the verdict's margin);
3. the worst case over defenses (UC's highest accuracy, with or without one) and clean data.

Rows come from ``sweep/report.py`` with their ``study`` intervals and ``_seed_values`` (each
run's figure per measure; ``sweep/report_study.py``);
a point of one seed (its interval over its victims only, or none) is drawn hollow, never as if
it had the seeds' interval.
"""

from __future__ import annotations

from typing import Any

from hpcue.figures.canvas import encode, pyplot
from hpcue.figures.sweep import SAVE, SEED_OFFSET, Line


def _points(ax: Any, line: Line, name: str, label: str | None, dodge: float = 1.0,
            **style: Any) -> Any:
    """One measure of one line: means joined, 95% intervals as error bars; hollow where a
    point has none. ``dodge``: a factor on x that keeps lines at one batch apart."""
    xs, ys, lo, hi, hollow = [], [], [], [], []
    for r in line.rows:
        s = r["study"][name]
        if s is None:
            continue
        xs.append(r["global_batch_size"] * dodge)
        ys.append(s["mean"])
        ci = s["ci95"] or [s["mean"], s["mean"]]
        lo.append(s["mean"] - ci[0])
        hi.append(ci[1] - s["mean"])
        if s.get("over") != "seeds":  # one seed: its victims' interval, or none
            hollow.append((xs[-1], ys[-1]))
    drawn = ax.errorbar(xs, ys, yerr=[lo, hi], capsize=3, label=label, **style)
    if hollow:
        ax.scatter(*zip(*hollow, strict=True), s=40, facecolors="white",
                   edgecolors=drawn[0].get_color(), zorder=4)
    return drawn


def _seeds(ax: Any, line: Line, name: str, color: str, dodge: float = 1.0) -> None:
    """Each run's figure of a measure, a little right of its mean."""
    xs, ys = [], []
    for r in line.rows:
        for value in r["_seed_values"][name]:
            xs.append(r["global_batch_size"] * SEED_OFFSET * dodge)
            ys.append(value)
    ax.scatter(xs, ys, s=8, color=color, alpha=0.45, zorder=3)


def study_figure(dataset: str, lines: list[Line], chance: float | None, margin: float) -> Any:
    """The figure ``draw_study`` writes (open: the caller closes it)."""
    plt = pyplot()
    from matplotlib.ticker import NullLocator

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6), sharex=True)
    acc, adv, worst = axes
    for i, line in enumerate(lines):
        dodge = 2 ** (0.09 * (i - (len(lines) - 1) / 2))  # lines side by side at one batch
        name = line.label or "UC"
        adv_line = _points(adv, line, "advantage", name, dodge, marker="o")
        color = adv_line[0].get_color()
        _seeds(adv, line, "advantage", color, dodge)
        _points(acc, line, "unlearnable", None, dodge, marker="o", color=color)
        _seeds(acc, line, "unlearnable", color, dodge)
        _points(acc, line, "random", None, dodge, marker="x", linestyle=":", color=color)
        _points(worst, line, "worst_case", None, dodge, marker="s", color=color)
        _points(worst, line, "clean", None, dodge, marker=".", linestyle="--", color=color)
    if chance is not None:
        for ax in (acc, worst):
            ax.axhline(chance, color="gray", linewidth=1, linestyle="-.",
                       label=f"chance (1/{round(1 / chance)})")
    adv.axhline(0.0, color="black", linewidth=1)
    adv.axhline(margin, color="gray", linewidth=1, linestyle="--",
                label=f"verdict's {margin * 100:.0f}-point margin")
    batches = sorted({r["global_batch_size"] for ln in lines for r in ln.rows})
    for ax, ylabel, title in (
            (acc, "accuracy on the clean test set",
             "UC (solid, o) and random noise (dotted, x); lower protects"),
            (adv, "random's accuracy minus UC's", "UC below random, paired (above 0 protects)"),
            (worst, "accuracy on the clean test set",
             "worst case over defenses (solid, squares); clean (dashed)")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(batches, [str(b) for b in batches])
        ax.xaxis.set_minor_locator(NullLocator())
        if len(batches) == 1:
            ax.set_xlim(batches[0] / 2, batches[0] * 2)
        ax.set_xlabel("global batch size (stage 1)")
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=9)
        if ax.get_legend_handles_labels()[0] and ax is not adv:
            ax.legend(fontsize=7, loc="lower right")
    # one entry per line (its colour in every panel), below the panels
    handles, labels = adv.get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 3), fontsize=8,
               bbox_to_anchor=(0.5, -0.02))
    fig.suptitle(f"{dataset}: mean and 95% interval over seeds; small dots: each seed "
                 f"(hollow: one seed, its interval over its victims only, or none)",
                 fontsize=10)
    fig.tight_layout(rect=(0, 0.05 + 0.035 * ((len(labels) + 2) // 3), 1, 1))
    return fig


def draw_study(dataset: str, lines: list[Line], chance: float | None, margin: float,
               formats: tuple[str, ...] = ("png", "pdf")) -> dict[str, bytes]:
    """The study figure of one data set's ``lines``, as each of ``formats``; ``margin``: the
    verdict's (``evaluation/verdict.py``), drawn in the paired panel."""
    return encode(study_figure(dataset, lines, chance, margin), formats, **SAVE)
