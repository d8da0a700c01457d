"""``hpcue report``: a sweep's runs as a CSV, a Markdown table, a LaTeX table and plots.

A row is one configuration: the runs that differ only in their seed. Runs are grouped by the
whole of their ``config.yaml`` except the seed and the keys that cannot change a result
(``NOT_A_SETTING``: launcher, workers, time-outs, the shared-clusters folder), and by what their
``results.json`` says was run (data set, global batch, world size, lr rule, eps, K, stage-1
effective lr): a 30-epoch debug run and a 2-epoch sweep point are two rows, never two "seeds".
Accuracies are mean ± sample std over the row's seeds (each seed's figure is itself the mean
over its victim seeds); a row of one run shows the std over that run's victim seeds, the ±
``hpcue run`` printed for it, and where that run had one victim seed (or an older results.json
no victims) there is no spread: ``n/a`` in the tables, empty in the CSV.

Columns (``report_tables.COLUMNS``; the Markdown and LaTeX tables show the same ones):
``config``, a digest of everything the row groups by (two rows never share one; the same
config gets the same digest in every report); ``setting``, the config keys that tell the row
from the other rows of its data set (beyond the columns below); ``global_batch_size``,
``world_size``; ``lr_scaling``, stage 1's lr rule; ``epsilon`` (a pixel-scale number in the
CSV, ``n/255`` in the tables); ``num_clusters`` (K); ``victim_epochs`` (``victim.epochs`` of
config.yaml); ``effective_lr``, stage 1's learning rate after its lr rule
(``stage1_batch.effective_lr``); ``seeds`` (``n of m (!)`` when a sweep's ``sweep.json``
asked for more); clean, unlearnable, random-noise and worst-case (the highest, with or
without a defense) accuracy; cluster purity, seconds, stage-1 images per second;
``num_classes``. A value an older ``results.json`` does not hold is ``-`` in the tables and
empty in the CSV.

Plots (``report_plots``): per data set, accuracy against the global batch, one line per
configuration but its batch (lr rule, eps, K, any other setting that varies: never a line
joining two configs), each run's unlearnable accuracy as a small marker beside the mean ± std,
and chance level, 1 / number of classes: ``num_classes`` of results.json, else the
``classes`` of the run's shards (its ``unlearnable/`` or ``data/`` meta.json, or an absolute
``data.shards``); none is drawn when neither says. PNG and PDF; and throughput against the
world size.

Nothing is dropped silently. A point a sweep expected (its ``sweep.json``) that has no
``results.json`` (not run, failed, or stopped: its finished stages are named) is listed as
missing or failed. So is a run whose ``results.json`` cannot be reported: not JSON, not an
object, a key the report reads missing or of the wrong type, or NaN or Infinity (which Python's
json reads) in a value the report reads; its path and the key are named, and it is in no row,
mean, CSV or plot. Such a run is counted as failed rather than stopping the whole report: in a
sweep of dozens of points one damaged file should not hide the rest, and the list under the
table (also printed) says which point to rerun. A damaged ``sweep.json`` is an error, though:
without it the report cannot tell which points are missing. Every file is written atomically.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import statistics
from collections import defaultdict
from pathlib import Path

import yaml

from hpcue.config import flatten
from hpcue.errors import InputError, MissingInputError
from hpcue.evaluation.metrics import sample_std
from hpcue.io import atomic_write, atomic_write_text, read_json
from hpcue.stages.rundir import STAGES, RunDir
from hpcue.sweep.machines import CONTROL
from hpcue.sweep.report_attacks import attack_columns, attacks_markdown
from hpcue.sweep.report_learners import learners_markdown
from hpcue.sweep.report_plots import plot, plot_study
from hpcue.sweep.report_study import (
    SEED_COLUMNS,
    seed_rows,
    seeds_markdown,
    study_columns,
    study_markdown,
)
from hpcue.sweep.report_tables import COLUMNS, latex, markdown

#: config keys that never change a result, or that are columns of their own
NOT_A_SETTING = {"name", "seed", "runtime.launcher", "runtime.accelerator", "runtime.timeout_s",
                 "runtime.setup_timeout_s", "runtime.deterministic", "data.num_workers",
                 "data.cache", "cluster.shared", "train.global_batch_size", "train.lr_scaling"}
#: settings with a column of their own (still part of a row's config, not of its label)
COLUMN_SETTINGS = {"train.epsilon", "cluster.num_clusters", "victim.epochs"}
#: hex digits of the config digest
DIGEST_LENGTH = 10


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
    return {k: v for k, v in flatten(tree).items() if k not in NOT_A_SETTING}


#: what the report reads from a results.json: dotted key -> (required, kind)
READS = {
    "dataset": (True, "text"), "global_batch_size": (True, "count"),
    "world_size": (False, "count"), "stage1_batch.lr_scaling": (False, "text"),
    "stage1_batch.effective_lr": (False, "number"), "stage1_batch.base_lr": (False, "number"),
    "epsilon": (False, "number"),
    "num_clusters": (False, "count"), "num_classes": (False, "count"),
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


def _get(data: dict, key: str, default: object = None) -> object:
    """A value ``unusable`` has checked, or ``default`` where the file does not hold it."""
    value = _lookup(data, key)
    return default if value is _ABSENT or value is None else value


def _is_number(value: object) -> bool:
    """A finite int or float: json reads NaN and Infinity, and neither may reach a mean."""
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _kind_problem(value: object, kind: str) -> str | None:
    if kind == "text" and not (isinstance(value, str) and value and not CONTROL.search(value)):
        return "not a one-line text"
    if kind == "count" and not _is_count(value):
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


def classes_from_data(run_dir: Path, setting: dict) -> int | None:
    """The number of classes in the run's shards (their meta.json), for results.json written
    before it held ``num_classes``; None when no meta.json says (never an error: it only
    decides whether a chance line is drawn)."""
    from hpcue.data.meta_io import META

    run = RunDir(Path(run_dir))
    places = [run.unlearnable, run.data]
    shards = setting.get("data.shards")
    if isinstance(shards, str) and Path(shards).is_absolute():  # a relative one: from where?
        places.append(Path(shards))
    for place in places:
        try:
            classes = json.loads((place / META).read_text()).get("classes")
        except (OSError, ValueError, UnicodeDecodeError, AttributeError):
            continue
        if isinstance(classes, list) and len(classes) >= 2:
            return len(classes)
    return None


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
            results.append(read_result(path) | {"_name": _name(runs, path.parent)})
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


def facts(result: dict) -> dict:
    """What one run ran, beside its settings: the row's columns (None where not known).

    eps and K come from results.json (what the artifacts were made with), else config.yaml;
    victim epochs only from config.yaml (results.json does not hold them)."""
    mine = result["_settings"]
    eps = _get(result, "epsilon", mine.get("train.epsilon"))
    k = _get(result, "num_clusters", mine.get("cluster.num_clusters"))
    epochs = mine.get("victim.epochs")
    return {"dataset": result["dataset"], "global_batch_size": result["global_batch_size"],
            "world_size": _get(result, "world_size", 1),
            "lr_scaling": _get(result, "stage1_batch.lr_scaling", "none"),
            "epsilon": eps if _is_number(eps) else None,
            "num_clusters": k if _is_count(k) else None,
            "victim_epochs": epochs if _is_count(epochs) else None,
            "effective_lr": _get(result, "stage1_batch.effective_lr"),
            # not a column: it tells lines apart where config.yaml is missing
            "base_lr": _get(result, "stage1_batch.base_lr")}


def config_key(result: dict, across_world_sizes: bool = False) -> str:
    """Everything a row groups by, as sorted JSON: the settings and the facts (but the world
    size, ``across_world_sizes``: the same global batch on more ranks is the same experiment)."""
    mine = facts(result)
    if across_world_sizes:
        del mine["world_size"]
    return json.dumps({"settings": result["_settings"], **mine}, sort_keys=True, default=str)


def digest(key: str) -> str:
    """The config digest a row is cited by: a short sha256 of its ``config_key``."""
    return hashlib.sha256(key.encode()).hexdigest()[:DIGEST_LENGTH]


def _labels(groups: dict[str, list[dict]]) -> dict[str, str]:
    """Per group, the settings that tell it from other groups of its data set ("" if none),
    but those with a column of their own."""
    def shown(runs: list[dict]) -> dict:
        return {k: v for k, v in runs[0]["_settings"].items() if k not in COLUMN_SETTINGS}

    labels = {}
    for key, runs in groups.items():
        mine = shown(runs)
        others = [shown(g) for k, g in groups.items()
                  if g[0]["dataset"] == runs[0]["dataset"] and k != key]
        varying = sorted({k for o in others for k in mine.keys() | o.keys()
                          if mine.get(k) != o.get(k)})
        labels[key] = ", ".join(f"{k}={mine.get(k)}" for k in varying)
    return labels


def _victim_std(result: dict, arm: str | None) -> float | None:
    """The std over one run's victim seeds of the arm's summary at ``arm`` (a dotted key of
    results.json): the ± ``hpcue run`` printed beside it (``pipeline.summary_table``); None
    where it printed n/a (one victim seed) or results.json does not hold it."""
    try:
        summary = _lookup(result, arm) if arm else _ABSENT
    except ValueError:
        return None
    if not isinstance(summary, dict) or not _is_count(summary.get("n")) or summary["n"] < 2:
        return None
    std = summary.get("std")
    return round(std, 4) if _is_number(std) else None


def _mean_std(values: list[float], runs: list[dict],
              arm: str | None) -> tuple[float | None, float | None]:
    """Mean and sample std of the row's runs, rounded. A row of one run has no spread over
    runs; its ± is then the spread over that run's victim seeds (``arm``: where results.json
    keeps them), the same ± ``hpcue run`` printed for it, so the report never says n/a where
    the run showed a measured spread (None, never 0, where neither has one). A row of several
    runs keeps the std over its runs: each run's figure is already its victims' mean."""
    if not values:
        return None, None
    mean = round(statistics.mean(values), 4)
    if len(values) > 1:
        return mean, round(sample_std(values), 4)
    return mean, _victim_std(runs[0], arm) if len(runs) == 1 else None


def _order(row: dict) -> tuple:
    """Rows of one configuration but the batch together, batches ascending."""
    def known(value: object) -> tuple:
        return (value is None, value if value is not None else 0)

    return (row["dataset"], row["setting"], known(row["epsilon"]), known(row["num_clusters"]),
            known(row["victim_epochs"]), row["lr_scaling"],
            tuple(int(w) for w in str(row["world_size"]).split("+")),
            row["global_batch_size"], row["config"])


def summarise(results: list[dict], expected: dict[str, int] | None = None,
              across_world_sizes: bool = False) -> list[dict]:
    """One row per config: runs that differ only in their seed are averaged, never runs with
    other settings (another image size, K, eps, lr rule or epochs is another row).
    ``across_world_sizes``: runs at one global batch on different world sizes are one row,
    whose world size lists them (``1+2``); the per-seed table keeps each run's."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in results:
        groups[config_key(r, across_world_sizes)].append(r)
    labels = _labels(groups)
    rows = []
    for key, runs in groups.items():
        clean = _mean_std([r["clean_test_acc"] for r in runs], runs, "victims.clean")
        unl = _mean_std([r["unlearnable_test_acc"] for r in runs], runs, "victims.uc")
        rand = _mean_std([r["baselines"]["random"]["mean"] for r in runs
                          if _get(r, "baselines.random.mean") is not None], runs,
                         "baselines.random")
        worst_arm = _get(runs[0], "worst_case_defense")
        worst = _mean_std([r["worst_case_unlearnable_test_acc"] for r in runs
                           if _get(r, "worst_case_unlearnable_test_acc") is not None], runs,
                          f"victims.{worst_arm}" if isinstance(worst_arm, str) else None)
        wanted = {(expected or {}).get(str(Path(r["_dir"]).parent)) for r in runs} - {None}
        classes = {_get(r, "num_classes") or classes_from_data(Path(r["_dir"]), r["_settings"])
                   for r in runs} - {None}
        rows.append({
            **facts(runs[0]), "setting": labels[key], "config": digest(key),
            "seeds": len(runs), "expected_seeds": max(wanted) if wanted else None,
            "clean_test_acc_mean": clean[0], "clean_test_acc_std": clean[1],
            "unlearnable_test_acc_mean": unl[0], "unlearnable_test_acc_std": unl[1],
            "random_test_acc_mean": rand[0], "random_test_acc_std": rand[1],
            "worst_case_unlearnable_test_acc_mean": worst[0],
            "worst_case_unlearnable_test_acc_std": worst[1],
            "cluster_purity": round(statistics.mean(r["cluster_purity"] for r in runs), 4),
            "seconds_total": round(statistics.mean(sum(r["seconds"].values()) for r in runs), 1),
            "stage1_images_per_second": round(statistics.mean(
                r["stage1_images_per_second"] for r in runs), 1),
            "num_classes": classes.pop() if len(classes) == 1 else None,
            **study_columns(runs),
            **attack_columns(runs),
            "_runs": runs,
            # for the plots, not the CSV: what tells lines apart, and each seed's point
            "_settings": runs[0]["_settings"],
            "_unlearnable_runs": [r["unlearnable_test_acc"] for r in runs],
        })
    if across_world_sizes:  # a seed run on two world sizes is still one seed
        for row in rows:
            worlds = sorted({_get(r, "world_size", 1) for r in row["_runs"]})
            row["world_size"] = "+".join(str(w) for w in worlds)
            row["seeds"] = len({r.get("seed", r["_dir"]) for r in row["_runs"]})
    return sorted(rows, key=_order)


def write_csv(path: Path, columns: list[str], rows: list[dict]) -> None:
    """``rows`` as a CSV of ``columns`` (other keys left out), atomically."""
    def write(tmp: Path) -> None:
        with tmp.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)

    atomic_write(path, write)


def report(runs: Path, out: Path | None = None,
           across_world_sizes: bool = False) -> dict[str, Path | list[Path]]:
    """Write report.csv, report.md, report.tex, the per-seed seeds.csv and seeds.md, and the
    plots under ``out`` (default RUNS/report); what was written by kind, as ``hpcue report``
    prints it. ``across_world_sizes``: one row per global batch whatever the world size."""
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
    rows = summarise(results, expected, across_world_sizes)

    write_csv(out / "report.csv", COLUMNS, rows)
    extra = [t for t in (attacks_markdown(rows), learners_markdown(rows)) if t]
    atomic_write_text(out / "report.md", markdown(rows, failed)
                      + "\n" + "\n".join(study_markdown(rows)) + "\n"
                      + "".join("\n" + "\n".join(t) + "\n" for t in extra))
    atomic_write_text(out / "report.tex", latex(rows, failed))
    per_seed = seed_rows(rows)
    seeds_csv, seeds_md = out / "seeds.csv", out / "seeds.md"
    write_csv(seeds_csv, SEED_COLUMNS, per_seed)
    atomic_write_text(seeds_md, seeds_markdown(per_seed))
    batch_plots, throughput = plot(rows, out, summarise(results, expected)
                                   if across_world_sizes else None)
    study_plots = plot_study(rows, out)
    if failed:
        print(f"[hpcue] {len(failed)} missing or failed points, in no row of the report:")
        for name, why in failed.items():
            print(f"[hpcue]   {name}: {why}")
    return {"csv": out / "report.csv", "markdown": out / "report.md",
            "latex": out / "report.tex", "per_seed": [seeds_csv, seeds_md],
            "batch_plots": batch_plots, "study_plots": study_plots,
            "throughput_plot": throughput}
