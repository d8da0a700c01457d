"""``hpcue report``: a sweep's runs as a CSV, a Markdown table and plots.

Rows group runs that differ only in their seed: same data set, settings (the run's config.yaml),
global batch size, world size and lr rule; accuracies are mean and standard deviation over
those seeds, beside the random-noise baseline.

Nothing is dropped silently. A point a sweep expected (its ``sweep.json``) that has no
``results.json`` (not run, failed, or stopped: its finished stages are named) is listed as
missing or failed. So is a run whose ``results.json`` cannot be reported: not JSON, not an
object, a key the report reads missing or of the wrong type, or NaN or Infinity (which Python's
json reads) in a value the report reads; its path and the key are named, and it is in no row,
mean, CSV or plot. Such a run is counted as failed rather than stopping the whole report: in a
sweep of dozens of points one damaged file should not hide the rest, and the list under the
table (also printed) says which point to rerun. A damaged ``sweep.json`` is an error, though:
without it the report cannot tell which points are missing.
"""

from __future__ import annotations

import csv
import json
import math
import statistics
from collections import defaultdict
from pathlib import Path

import yaml

from hpcue.errors import InputError, MissingInputError
from hpcue.evaluation.metrics import sample_std
from hpcue.io import atomic_write, atomic_write_text, read_json
from hpcue.stages.rundir import STAGES, RunDir
from hpcue.sweep.spec import CONTROL, slug

COLUMNS = ["dataset", "setting", "global_batch_size", "world_size", "lr_scaling", "seeds",
           "expected_seeds", "clean_test_acc_mean", "clean_test_acc_std",
           "unlearnable_test_acc_mean", "unlearnable_test_acc_std", "random_test_acc_mean",
           "random_test_acc_std", "worst_case_unlearnable_test_acc_mean", "cluster_purity",
           "seconds_total", "stage1_images_per_second"]

#: config keys that never change a result, or that are columns of their own
NOT_A_SETTING = {"name", "seed", "runtime.launcher", "runtime.accelerator", "runtime.timeout_s",
                 "runtime.setup_timeout_s", "runtime.deterministic", "data.num_workers",
                 "data.cache", "cluster.shared", "train.global_batch_size", "train.lr_scaling"}


def _flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out |= _flat(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def settings(run_dir: Path) -> dict:
    """The run's config as ``{dotted key: value}``, without what cannot change a result."""
    path = RunDir(Path(run_dir)).config
    if not path.is_file():
        return {}
    try:
        tree = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise InputError(f"{path}: not valid YAML"
                         + (f" (line {mark.line + 1})" if mark else "")) from None
    if not isinstance(tree, dict):
        raise InputError(f"{path}: not a mapping but {type(tree).__name__}")
    return {k: v for k, v in _flat(tree).items() if k not in NOT_A_SETTING}


#: what the report reads from a results.json: dotted key -> (required, kind)
READS = {
    "dataset": (True, "text"), "global_batch_size": (True, "count"),
    "world_size": (False, "count"), "stage1_batch.lr_scaling": (False, "text"),
    "clean_test_acc": (True, "number"), "unlearnable_test_acc": (True, "number"),
    "worst_case_unlearnable_test_acc": (False, "number"),
    "baselines.random.mean": (False, "number"), "cluster_purity": (True, "number"),
    "stage1_images_per_second": (True, "number"), "seconds": (True, "numbers"),
}
_ABSENT = object()


def _lookup(data: dict, key: str) -> object:
    """``data``'s value at a dotted key, or _ABSENT (a null object on the way is absent)."""
    node: object = data
    parts = key.split(".")
    for i, part in enumerate(parts):
        if node is None or node is _ABSENT:
            return _ABSENT
        if not isinstance(node, dict):
            raise ValueError(f"{'.'.join(parts[:i])} is {node!r}, not an object")
        node = node.get(part, _ABSENT)
    return node


def _is_number(value: object) -> bool:
    """A finite int or float: json reads NaN and Infinity, and neither may reach a mean."""
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


def _kind_problem(value: object, kind: str) -> str | None:
    if kind == "text" and not (isinstance(value, str) and value and not CONTROL.search(value)):
        return "not a one-line text"
    if kind == "count" and not (isinstance(value, int) and not isinstance(value, bool)
                                and value > 0):
        return "not a positive integer"
    if kind == "number" and not _is_number(value):
        return "not a finite number"
    if kind == "numbers" and not (isinstance(value, dict)
                                  and all(_is_number(v) for v in value.values())):
        return "not an object of finite numbers"
    return None


def unusable(data: object) -> str | None:
    """Why a results.json cannot be reported (None: it can): the first key that is missing,
    of the wrong type, or NaN or Infinity, or that it is not an object."""
    if not isinstance(data, dict):
        return f"not a JSON object but {type(data).__name__}"
    for key, (required, kind) in READS.items():
        try:
            value = _lookup(data, key)
        except ValueError as exc:
            return str(exc)
        if value is _ABSENT:
            if required:
                return f"no {key}"
            continue
        problem = _kind_problem(value, kind)
        if problem:
            return f"{key} is {value!r}, {problem}"
    return None


def read_result(path: Path) -> dict:
    """One results.json with its run's directory and settings; an InputError naming the file
    and key when it cannot be reported.

    Read with json itself, which takes NaN and Infinity, so that ``unusable`` names their key.
    """
    try:
        data = json.loads(Path(path).read_text())
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
        raise InputError(f"{path}: not valid JSON ({exc})") from None
    why = unusable(data)
    if why:
        raise InputError(f"{path}: {why}")
    data["_dir"] = str(path.parent)
    data["_settings"] = settings(path.parent)
    return data


def unfinished(run_dir: Path) -> str:
    """Why a point has no results: not run, or stopped or failed after the stages named."""
    run = RunDir(run_dir)
    done = [stage for stage in STAGES if run.stage_record(stage).is_file()]
    if done:
        return f"stopped or failed after stage {done[-1]}: no {RunDir.RESULTS}"
    return f"not run, or stopped in its first stage: no {RunDir.RESULTS}"


def _manifest(path: Path) -> tuple[list[str], int | None]:
    """A sweep.json's point names and number of seeds; an InputError if it is damaged."""
    sweep = read_json(path)
    points = sweep.get("points", []) if isinstance(sweep, dict) else None
    seeds = sweep.get("seeds", []) if isinstance(sweep, dict) else None
    if (not isinstance(points, list) or not all(isinstance(p, str) for p in points)
            or not isinstance(seeds, list)):
        raise InputError(f"{path}: not a sweep manifest (an object with a points list of names "
                         f"and a seeds list); `hpcue sweep submit` or `local` writes it again")
    return points, len(seeds) or None


def collect(runs: Path) -> tuple[list[dict], dict[str, str], dict[str, int]]:
    """All reportable results.json under ``runs``; the runs that failed, with why (an expected
    point without results, a results.json that cannot be reported); and how many seeds each
    sweep directory expected."""
    runs = Path(runs)
    results, failed = [], {}
    for path in sorted(runs.rglob(RunDir.RESULTS)):
        try:
            results.append(read_result(path))
        except InputError as exc:
            failed[_name(runs, path.parent)] = str(exc)
    expected = {}
    for manifest in sorted(runs.rglob("sweep.json")):
        points, expected[str(manifest.parent)] = _manifest(manifest)
        for point in points:
            if not RunDir(manifest.parent / point).finished:
                failed[_name(runs, manifest.parent / point)] = unfinished(manifest.parent / point)
    return results, failed, expected


def _name(runs: Path, run_dir: Path) -> str:
    """A run as the report names it: its directory under ``runs``."""
    return str(run_dir.relative_to(runs)) if run_dir != runs else run_dir.name


def _labels(groups: dict[tuple, list[dict]]) -> dict[tuple, str]:
    """Per group, the settings that tell it from other groups of its data set ("" if none)."""
    labels = {}
    for key, runs in groups.items():
        mine = runs[0]["_settings"]
        others = [g[0]["_settings"] for k, g in groups.items() if k[0] == key[0] and k != key]
        varying = sorted({k for o in others for k in mine.keys() | o.keys()
                          if mine.get(k) != o.get(k)})
        labels[key] = ", ".join(f"{k}={mine.get(k)}" for k in varying)
    return labels


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return round(statistics.mean(values), 4), round(sample_std(values), 4)


def summarise(results: list[dict], expected: dict[str, int] | None = None) -> list[dict]:
    """One row per setting: runs that differ only in their seed are averaged, never runs with
    other settings (another image size, K, eps or epochs is another row)."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in results:
        rule = r.get("stage1_batch", {}).get("lr_scaling", "none")
        setting = json.dumps(r["_settings"], sort_keys=True, default=str)
        groups[(r["dataset"], setting, r["global_batch_size"], r.get("world_size", 1),
                rule)].append(r)
    labels = _labels(groups)
    rows = []
    for key in sorted(groups, key=lambda k: (k[0], labels[k], k[2], k[3], k[4])):
        runs = groups[key]
        dataset, _, batch, world, rule = key
        clean = _mean_std([r["clean_test_acc"] for r in runs])
        unl = _mean_std([r["unlearnable_test_acc"] for r in runs])
        rand = _mean_std([r["baselines"]["random"]["mean"] for r in runs
                          if "random" in (r.get("baselines") or {})])
        worst = _mean_std([r["worst_case_unlearnable_test_acc"] for r in runs
                           if "worst_case_unlearnable_test_acc" in r])
        wanted = {(expected or {}).get(str(Path(r["_dir"]).parent)) for r in runs} - {None}
        rows.append({
            "dataset": dataset, "setting": labels[key], "global_batch_size": batch,
            "world_size": world, "lr_scaling": rule, "seeds": len(runs),
            "expected_seeds": max(wanted) if wanted else None,
            "clean_test_acc_mean": clean[0], "clean_test_acc_std": clean[1],
            "unlearnable_test_acc_mean": unl[0], "unlearnable_test_acc_std": unl[1],
            "random_test_acc_mean": rand[0], "random_test_acc_std": rand[1],
            "worst_case_unlearnable_test_acc_mean": worst[0],
            "cluster_purity": round(statistics.mean(r["cluster_purity"] for r in runs), 4),
            "seconds_total": round(statistics.mean(sum(r["seconds"].values()) for r in runs), 1),
            "stage1_images_per_second": round(statistics.mean(
                r["stage1_images_per_second"] for r in runs), 1),
        })
    return rows


def _acc(row: dict, name: str) -> str:
    """mean ± std over seeds; one seed has no spread to show."""
    mean, std = row[f"{name}_mean"], row.get(f"{name}_std")
    if mean is None:
        return "-"
    return f"{mean:.4f}" if row["seeds"] < 2 or std is None else f"{mean:.4f} ± {std:.4f}"


def _seeds(row: dict) -> str:
    want = row["expected_seeds"]
    return f"{row['seeds']} of {want} (!)" if want and row["seeds"] < want else str(row["seeds"])


def markdown(rows: list[dict], failed: dict[str, str]) -> str:
    lines = ["| data set | setting | global batch | world size | lr rule | seeds | clean acc | "
             "unlearnable acc | random-noise acc | worst case | purity | seconds | "
             "stage-1 img/s |",
             "|---|---|---:|---:|---|---:|---|---|---|---|---:|---:|---:|"]
    for r in rows:
        worst = r["worst_case_unlearnable_test_acc_mean"]
        lines.append(
            f"| {r['dataset']} | {r['setting'] or '-'} | {r['global_batch_size']} | "
            f"{r['world_size']} | {r['lr_scaling']} | {_seeds(r)} | "
            f"{_acc(r, 'clean_test_acc')} | {_acc(r, 'unlearnable_test_acc')} | "
            f"{_acc(r, 'random_test_acc')} | {'-' if worst is None else f'{worst:.4f}'} | "
            f"{r['cluster_purity']:.3f} | {r['seconds_total']:.1f} | "
            f"{r['stage1_images_per_second']:.1f} |")
    lines += ["", "Accuracies on the clean test set, mean ± std over the seeds of each row (each "
              "seed's figure is itself the mean over its victim seeds); lower unlearnable "
              "accuracy is better protection, and it counts only as far as it is below "
              "random noise. (!): fewer seeds finished than the sweep asked for."]
    if failed:
        lines += ["", f"Missing or failed points ({len(failed)}): " + ", ".join(failed), ""]
        lines += [f"- {name}: {why}" for name, why in failed.items()]
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
    """One figure per data set (clean, unlearnable and random-noise accuracy against the global
    batch, error bars over seeds, one line per setting and lr rule), and throughput."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for dataset in sorted({r["dataset"] for r in rows}):
        fig, ax = plt.subplots(figsize=(6.5, 4.2))
        lines = sorted({(r["setting"], r["lr_scaling"], r["world_size"]) for r in rows
                        if r["dataset"] == dataset})
        for setting, rule, world in lines:
            mine = sorted((r for r in rows if r["dataset"] == dataset
                           and (r["setting"], r["lr_scaling"], r["world_size"])
                           == (setting, rule, world)), key=lambda r: r["global_batch_size"])
            xs = [r["global_batch_size"] for r in mine]
            tag = ", ".join(t for t in (setting, f"lr {rule}" if len(lines) > 1 else "") if t)
            unl = ax.errorbar(xs, [r["unlearnable_test_acc_mean"] for r in mine],
                              yerr=[r["unlearnable_test_acc_std"] or 0 for r in mine],
                              marker="o", capsize=3, label=f"unlearnable {tag}".strip())
            color = unl[0].get_color()
            ax.errorbar(xs, [r["clean_test_acc_mean"] for r in mine],
                        yerr=[r["clean_test_acc_std"] or 0 for r in mine], linestyle="--",
                        marker=".", capsize=2, color=color, label=f"clean {tag}".strip())
            if all(r["random_test_acc_mean"] is not None for r in mine):
                ax.errorbar(xs, [r["random_test_acc_mean"] for r in mine],
                            yerr=[r["random_test_acc_std"] or 0 for r in mine], linestyle=":",
                            marker="x", capsize=2, color=color,
                            label=f"random noise {tag}".strip())
        ax.set_xscale("log", base=2)
        batches = sorted({r["global_batch_size"] for r in rows if r["dataset"] == dataset})
        ax.set_xticks(batches, [str(b) for b in batches])  # the batch sizes, not powers of 2
        paths.append(_finish(fig, ax, out / f"accuracy_vs_batch-{slug(dataset)}.png",
                             "global batch size", "victim accuracy on the clean test set",
                             f"{dataset}: mean ± std over seeds (lower unlearnable is better)"))

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
    results, failed, expected = collect(runs)
    if not results:
        found = ("none of its results.json can be reported" if any(runs.rglob(RunDir.RESULTS))
                 else "no results.json found (nothing finished yet)")
        raise InputError(f"{runs}: {found}"
                         + "".join(f"; {name}: {why}" for name, why in failed.items()))
    out = Path(out) if out is not None else runs / "report"
    rows = summarise(results, expected)

    def write_csv(tmp: Path) -> None:
        with tmp.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(rows)

    atomic_write(out / "report.csv", write_csv)
    atomic_write_text(out / "report.md", markdown(rows, failed))
    plots = plot(rows, out)
    if failed:
        print(f"[hpcue] {len(failed)} missing or failed points, in no row of the report:")
        for name, why in failed.items():
            print(f"[hpcue]   {name}: {why}")
    return {"csv": out / "report.csv", "markdown": out / "report.md",
            "batch_plots": plots[:-1], "throughput_plot": plots[-1]}
