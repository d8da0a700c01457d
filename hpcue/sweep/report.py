"""``hpcue report``: a sweep's runs as a CSV, a Markdown table and plots.

Rows group runs by (data set, global batch size, world size, lr rule); accuracies are mean and
standard deviation over seeds. Points a sweep expected (its ``sweep.json``) that have no
``results.json`` are listed as missing, never silently dropped.
"""

from __future__ import annotations

import csv
import statistics
from collections import defaultdict
from pathlib import Path

from hpcue.errors import InputError, MissingInputError
from hpcue.evaluation.metrics import sample_std
from hpcue.io import atomic_write, atomic_write_text, read_json
from hpcue.stages.rundir import RunDir

COLUMNS = ["dataset", "global_batch_size", "world_size", "lr_scaling", "seeds",
           "clean_test_acc_mean", "clean_test_acc_std", "unlearnable_test_acc_mean",
           "unlearnable_test_acc_std", "cluster_purity", "seconds_total",
           "stage1_images_per_second"]


def collect(runs: Path) -> tuple[list[dict], list[str]]:
    """All results.json under ``runs``, and the expected points that have none."""
    results = []
    for path in sorted(Path(runs).rglob(RunDir.RESULTS)):
        data = read_json(path)
        data["_dir"] = str(path.parent)
        results.append(data)
    missing = []
    for manifest in sorted(Path(runs).rglob("sweep.json")):
        for point in read_json(manifest).get("points", []):
            if not RunDir(manifest.parent / point).finished:
                missing.append(f"{manifest.parent.name}/{point}")
    return results, missing


def summarise(results: list[dict]) -> list[dict]:
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in results:
        rule = r.get("stage1_batch", {}).get("lr_scaling", "none")
        groups[(r["dataset"], r["global_batch_size"], r.get("world_size", 1), rule)].append(r)
    rows = []
    for (dataset, batch, world, rule), runs in sorted(groups.items()):
        clean = [r["clean_test_acc"] for r in runs]
        unl = [r["unlearnable_test_acc"] for r in runs]
        rows.append({
            "dataset": dataset, "global_batch_size": batch, "world_size": world,
            "lr_scaling": rule, "seeds": len(runs),
            "clean_test_acc_mean": round(statistics.mean(clean), 4),
            "clean_test_acc_std": round(sample_std(clean), 4),
            "unlearnable_test_acc_mean": round(statistics.mean(unl), 4),
            "unlearnable_test_acc_std": round(sample_std(unl), 4),
            "cluster_purity": round(statistics.mean(r["cluster_purity"] for r in runs), 4),
            "seconds_total": round(statistics.mean(sum(r["seconds"].values()) for r in runs), 1),
            "stage1_images_per_second": round(statistics.mean(
                r["stage1_images_per_second"] for r in runs), 1),
        })
    return rows


def markdown(rows: list[dict], missing: list[str]) -> str:
    lines = ["| data set | global batch | world size | lr rule | seeds | clean acc | "
             "unlearnable acc | purity | seconds | stage-1 img/s |",
             "|---|---:|---:|---|---:|---|---|---:|---:|---:|"]
    for r in rows:
        lines.append(
            f"| {r['dataset']} | {r['global_batch_size']} | {r['world_size']} | "
            f"{r['lr_scaling']} | {r['seeds']} | {r['clean_test_acc_mean']:.4f} ± "
            f"{r['clean_test_acc_std']:.4f} | {r['unlearnable_test_acc_mean']:.4f} ± "
            f"{r['unlearnable_test_acc_std']:.4f} | {r['cluster_purity']:.3f} | "
            f"{r['seconds_total']:.1f} | {r['stage1_images_per_second']:.1f} |")
    if missing:
        lines += ["", f"Missing or failed points ({len(missing)}): " + ", ".join(missing)]
    return "\n".join(lines) + "\n"


def _finish(fig, ax, path: Path, xlabel: str, ylabel: str, title: str) -> Path:
    import matplotlib.pyplot as plt

    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120))
    plt.close(fig)
    return path


def plot(rows: list[dict], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    fig, ax = plt.subplots(figsize=(6, 4))
    for dataset in sorted({r["dataset"] for r in rows}):
        mine = sorted((r for r in rows if r["dataset"] == dataset),
                      key=lambda r: r["global_batch_size"])
        xs = [r["global_batch_size"] for r in mine]
        line = ax.errorbar(xs, [r["unlearnable_test_acc_mean"] for r in mine],
                           yerr=[r["unlearnable_test_acc_std"] for r in mine], marker="o",
                           capsize=3, label=f"{dataset}: unlearnable")
        ax.plot(xs, [r["clean_test_acc_mean"] for r in mine], linestyle="--",
                color=line[0].get_color(), label=f"{dataset}: clean")
    ax.set_xscale("log", base=2)
    paths.append(_finish(fig, ax, out / "unlearnable_vs_batch.png", "global batch size",
                         "victim accuracy on the clean test set",
                         "Unlearnability against batch size (lower is better protection)"))

    fig, ax = plt.subplots(figsize=(6, 4))
    for dataset in sorted({r["dataset"] for r in rows}):
        by_world: dict[int, list[float]] = defaultdict(list)
        for r in rows:
            if r["dataset"] == dataset:
                by_world[r["world_size"]].append(r["stage1_images_per_second"])
        worlds = sorted(by_world)
        ax.plot(worlds, [statistics.mean(by_world[w]) for w in worlds], marker="o",
                label=dataset)
    paths.append(_finish(fig, ax, out / "throughput_vs_world_size.png", "world size (ranks)",
                         "stage-1 images per second", "Throughput against world size"))
    return paths


def report(runs: Path, out: Path | None = None) -> dict[str, Path]:
    runs = Path(runs)
    if not runs.is_dir():
        raise MissingInputError(f"{runs}: runs directory not found")
    results, missing = collect(runs)
    if not results:
        raise InputError(f"{runs}: no results.json found (nothing finished yet)"
                         + (f"; missing: {', '.join(missing)}" if missing else ""))
    out = Path(out) if out is not None else runs / "report"
    rows = summarise(results)

    def write_csv(tmp: Path) -> None:
        with tmp.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(rows)

    atomic_write(out / "report.csv", write_csv)
    atomic_write_text(out / "report.md", markdown(rows, missing))
    plots = plot(rows, out)
    if missing:
        print(f"[hpcue] missing or failed points: {', '.join(missing)}")
    return {"csv": out / "report.csv", "markdown": out / "report.md",
            "batch_plot": plots[0], "throughput_plot": plots[1]}
