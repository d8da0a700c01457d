"""The report's plots: accuracy against the global batch per data set, and throughput.

A line joins the rows of one configuration that differ only in their global batch (and the
effective lr their lr rule gives it): never two lr rules, two eps, two K or two settings, which
drawn as one line would zigzag between configs and read as an effect of the batch. Which rows
make a line is decided by ``batch_lines``, apart from the drawing (``figures/sweep.py``), so it
can be tested; this module names the files and writes them.
"""

from __future__ import annotations

import json
from collections import defaultdict
from functools import cache
from pathlib import Path

from hpcue.evaluation.verdict import MARGIN
from hpcue.figures.study import draw_study
from hpcue.figures.sweep import Line, draw_batch_plot, draw_throughput
from hpcue.io import atomic_write
from hpcue.sweep.points import slug
from hpcue.sweep.report_tables import eps_255

#: what, beside the settings, a line keeps fixed: row key -> how a label names its value
LINE_FACTS = {"lr_scaling": lambda v: f"lr {v}", "epsilon": lambda v: f"eps {eps_255(v)}",
              "num_clusters": lambda v: f"K {v}", "victim_epochs": lambda v: f"victim epochs {v}",
              "world_size": lambda v: f"world {v}", "base_lr": lambda v: f"base lr {v:g}"}


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


def _write(blobs: dict[str, bytes], path: Path) -> list[Path]:
    """Each format's bytes beside ``path`` (its suffix replaced), atomically."""
    paths = []
    for fmt, blob in blobs.items():
        target = path.with_suffix(f".{fmt}")
        atomic_write(target, lambda tmp, blob=blob: tmp.write_bytes(blob))
        paths.append(target)
    return paths


def plot(rows: list[dict], out: Path,
         by_world: list[dict] | None = None) -> tuple[list[Path], Path]:
    """Per data set, accuracy against the global batch (PNG and PDF): each line's clean,
    unlearnable and random-noise mean ± std, each seed's unlearnable accuracy, chance; and
    stage-1 throughput against the world size (PNG), from ``by_world`` (rows of one world
    size each; default ``rows``)."""
    lines = batch_lines(rows)
    paths = []
    for dataset in sorted({r["dataset"] for r in rows}):
        mine = [r for r in rows if r["dataset"] == dataset]
        blobs = draw_batch_plot(dataset, [ln for ln in lines if ln.dataset == dataset], mine,
                                chance(mine), ("png", "pdf"))
        paths += _write(blobs, out / f"accuracy_vs_batch-{slug(dataset)}.png")
    (throughput,) = _write({"png": draw_throughput(rows if by_world is None else by_world)},
                           out / "throughput_vs_world_size.png")
    return paths, throughput


@cache
def _defaults() -> dict[str, str]:
    """hpcue's config defaults as a label writes them (``{dotted key: str(value)}``)."""
    from hpcue.config import RunConfig, flatten

    return {k: str(v) for k, v in flatten(RunConfig().model_dump(mode="json")).items()}


def short_label(label: str, several: bool) -> str:
    """A line's label for a legend: its parts but those at hpcue's defaults (``train.lr=0.003``,
    ``lr none``), which say nothing a reader needs; "defaults" for a line left with none where
    other lines are drawn. Two lines never end with one label: where they differ, at most one
    of them is at the default."""
    defaults = _defaults()
    parts = [p for p in label.split(", ") if p]
    kept = []
    for part in parts:
        key, sep, value = part.partition("=")
        if (sep and defaults.get(key) == value) or part == "lr none":
            continue
        # the base lr says again what a train.lr part says, or is the default's
        if part.startswith("base lr ") and (
                any(p.startswith("train.lr=") for p in parts)
                or float(part.removeprefix("base lr ")) == float(defaults["train.lr"])):
            continue
        kept.append(part)
    return ", ".join(kept) or ("defaults" if several else "")


def plot_study(rows: list[dict], out: Path) -> list[Path]:
    """Per data set, the batch-size study's figure (PNG and PDF): UC's and random noise's
    accuracy, UC's paired advantage over random and the worst case over defenses, each a mean
    with its 95% interval against the global batch, one line per configuration."""
    lines = batch_lines(rows)
    for dataset in {ln.dataset for ln in lines}:
        mine = [ln for ln in lines if ln.dataset == dataset]
        for ln in mine:
            ln.label = short_label(ln.label, len(mine) > 1)
    lines.sort(key=lambda ln: ln.label != "defaults")  # the default line first: its colour
    paths = []
    for dataset in sorted({r["dataset"] for r in rows}):
        mine = [r for r in rows if r["dataset"] == dataset]
        blobs = draw_study(dataset, [ln for ln in lines if ln.dataset == dataset],
                           chance(mine), MARGIN, ("png", "pdf"))
        paths += _write(blobs, out / f"study-{slug(dataset)}.png")
    return paths
