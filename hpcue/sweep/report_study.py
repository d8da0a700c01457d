"""The batch-size study's figures and tables: each row's 95% intervals over its seeds, and one
line per run (the per-seed table) with the optimizer steps its stage 1 took.

A row's interval is Student's t over its runs (seeds) with the test set's sampling error added
(``metrics.seed_summary``; the test term is the runs' mean test variance, the bound
``metrics.pooled_summary`` uses for test sets that overlap, here the same one). A row of one
run takes the interval that run computed over its own victim seeds, so no point is drawn
without one; a run of one victim seed has none, and the figure says so (``n/a``).

The paired advantage is each run's ``uc_advantage_over_random`` (random noise's accuracy minus
UC's, victim seed by victim seed): its interval over seeds is the study's answer to "does UC
protect better than noise of the same size at this batch?".
"""

from __future__ import annotations

import math
import statistics

from hpcue.evaluation.metrics import seed_summary

#: what the study figure and table show per row: name -> (results.json key of each run's
#: figure, of its own summary (with ci95 and test_se), interval bounds)
MEASURES = {
    "unlearnable": ("unlearnable_test_acc", "victims.uc", (0.0, 1.0)),
    "random": ("baselines.random.mean", "baselines.random", (0.0, 1.0)),
    "advantage": ("uc_advantage_over_random.mean", "uc_advantage_over_random", (-1.0, 1.0)),
    "worst_case": ("worst_case_unlearnable_test_acc", None, (0.0, 1.0)),
    "clean": ("clean_test_acc", "victims.clean", (0.0, 1.0)),
}


def lookup(data: dict, key: str) -> object:
    """``data``'s value at a dotted key (None where absent or not an object on the way)."""
    node: object = data
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _number(value: object) -> float | None:
    """A finite number, else None (json reads NaN and Infinity; neither may reach a mean)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _ci(value: object, mean: float) -> list[float] | None:
    """An interval a results.json holds, if it is two finite numbers around ``mean``."""
    if not (isinstance(value, list) and len(value) == 2):
        return None
    lo, hi = (_number(v) for v in value)
    return [lo, hi] if lo is not None and hi is not None and lo <= mean <= hi else None


def _own_summary(run: dict, name: str) -> dict | None:
    """The run's own summary of a measure over its victim seeds (the worst case's is its
    worst arm's)."""
    key = MEASURES[name][1]
    if name == "worst_case":
        arm = run.get("worst_case_defense")
        key = f"victims.{arm}" if isinstance(arm, str) else None
    summary = lookup(run, key) if key else None
    return summary if isinstance(summary, dict) else None


def interval(runs: list[dict], name: str) -> dict | None:
    """A measure over ``runs`` (the seeds of one row): mean, std, 95% interval and n (the
    seeds), or None when no run holds it. Runs of one seed on several world sizes (a report
    ``--across-world-sizes``) are that seed's one figure, their mean: they share the seed's
    stage 1 and victims, and counted apart they would narrow the interval. One seed: the
    interval over its run's victims (``over``: "victim seeds", narrower than over seeds)."""
    key, _, bounds = MEASURES[name]
    by_seed: dict[object, list[tuple[dict, float]]] = {}
    for run in runs:
        value = _number(lookup(run, key))
        if value is not None:
            by_seed.setdefault(run.get("seed", run.get("_name")), []).append((run, value))
    if not by_seed:
        return None
    if len(by_seed) == 1:
        ((only, value), *more) = next(iter(by_seed.values()))
        mean = statistics.mean([value] + [v for _, v in more])
        ci = None if more else _ci((_own_summary(only, name) or {}).get("ci95"), mean)
        return {"mean": round(mean, 4), "std": None, "ci95": ci, "n": 1,
                "over": "victim seeds" if ci else "none"}
    values = [statistics.mean(v for _, v in pairs) for pairs in by_seed.values()]
    ses = [_number((_own_summary(r, name) or {}).get("test_se"))
           for pairs in by_seed.values() for r, _ in pairs]
    ses = [se for se in ses if se is not None]
    test_var = statistics.mean(se ** 2 for se in ses) if ses else None
    out = seed_summary(values, test_var, bounds=bounds)
    return {"mean": out["mean"], "std": out["std"], "ci95": out["ci95"], "n": out["n"],
            "over": "seeds"}


def study_columns(runs: list[dict]) -> dict:
    """A row's study figures: each measure's interval, stage 1's optimizer, the reading of
    "the same training" and the optimizer steps its runs took (a range where they differ)."""
    budgets = [r.get("stage1_budget") for r in runs]
    steps = sorted({b["optimizer_steps"] for b in budgets
                    if isinstance(b, dict) and isinstance(b.get("optimizer_steps"), int)})
    readings = {b.get("reading") for b in budgets if isinstance(b, dict)} - {None}
    optimizers = {r.get("stage1_optimizer") or "adamw" for r in runs}
    return {"study": {name: interval(runs, name) for name in MEASURES},
            # each run's figure of every measure, for the figure's per-seed dots
            "_seed_values": {name: [v for v in (_number(lookup(r, key)) for r in runs)
                                    if v is not None]
                             for name, (key, _, _) in MEASURES.items()},
            "optimizer": "+".join(sorted(optimizers)),
            "reading": "+".join(sorted(readings)) or None,
            "optimizer_steps": (None if not steps else str(steps[0]) if len(steps) == 1
                                else f"{steps[0]}-{steps[-1]}")}


def fmt_interval(summary: dict | None) -> str:
    """``0.643 [0.555, 0.731]``; ``(victims)`` after the interval of one seed's victims (it
    leaves out the seeds' spread); ``n/a`` for one victim seed; ``-`` unknown."""
    if summary is None:
        return "-"
    ci = summary["ci95"]
    if not ci:
        return f"{summary['mean']:.3f} [n/a]"
    text = f"{summary['mean']:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"
    return text + (" (victims)" if summary.get("over") == "victim seeds" else "")


def reading_note(rows: list[dict]) -> str:
    """What "the same training" meant for these rows, as the report says it."""
    readings = {r.get("reading") for r in rows} - {None}
    if readings == {"epochs"}:
        return ("Stage 1 trained for the same number of epochs at every batch size (the "
                "paper's reading): a larger batch took fewer optimizer steps.")
    if readings == {"steps"}:
        return ("Stage 1 took the same number of optimizer steps at every batch size (the "
                "fixed-steps reading): a larger batch saw more epochs.")
    if readings:
        return ("Rows differ in what \"the same training\" meant (epochs in some, optimizer "
                "steps in others): see each row's reading.")
    return "These results.json do not say how stage 1's training was budgeted."


STUDY_HEADS = ["data set", "setting", "global batch", "world size", "lr rule", "optimizer",
               "reading",
               "stage-1 steps", "n seeds", "unlearnable acc [95% CI]",
               "random-noise acc [95% CI]", "UC below random [95% CI]",
               "worst case [95% CI]", "clean acc [95% CI]"]


def study_markdown(rows: list[dict]) -> list[str]:
    """The study table: per row, every measure's mean and 95% interval, and its steps."""
    lines = ["## The batch-size study: 95% intervals over seeds", "",
             "| " + " | ".join(STUDY_HEADS) + " |",
             "|---|---|---:|---|---|---|---|---:|---:|" + "---|" * 5]
    for r in rows:
        s = r["study"]
        cells = [r["dataset"], r["setting"] or "-", str(r["global_batch_size"]),
                 str(r["world_size"]), r["lr_scaling"], r["optimizer"], r["reading"] or "-",
                 r["optimizer_steps"] or "-", str(r["seeds"]),
                 *(fmt_interval(s[name]) for name in
                   ("unlearnable", "random", "advantage", "worst_case", "clean"))]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    lines += ["", reading_note(rows) + " Intervals: Student's t over the row's seeds with the "
              "test set's sampling error; a row of one seed shows the interval over that run's "
              "victim seeds, marked (victims): narrower, it leaves out the seeds' spread (n/a: "
              "one victim seed). UC below random: random noise's accuracy "
              "minus UC's, paired victim seed by victim seed; above 0 protects better than "
              "noise. worst case: UC's highest accuracy with or without a defense."]
    return lines


#: the per-seed table's columns (seeds.csv; seeds.md shows the same)
SEED_COLUMNS = ["run", "dataset", "config", "setting", "global_batch_size", "world_size",
                "seed", "optimizer", "reading", "epochs", "optimizer_steps", "clean_test_acc",
                "unlearnable_test_acc", "random_test_acc", "uc_below_random",
                "worst_case_unlearnable_test_acc", "worst_case_defense"]


def seed_rows(rows: list[dict]) -> list[dict]:
    """One line per run of every row, in the rows' order, seeds ascending."""
    out = []
    for row in rows:
        for run in sorted(row["_runs"], key=lambda r: (r.get("seed", 0), r["_name"])):
            budget = run.get("stage1_budget") if isinstance(run.get("stage1_budget"),
                                                            dict) else {}
            out.append({
                "run": run["_name"], "dataset": row["dataset"], "config": row["config"],
                "setting": row["setting"], "global_batch_size": run["global_batch_size"],
                "world_size": run.get("world_size", 1), "seed": run.get("seed"),
                "optimizer": run.get("stage1_optimizer") or "adamw",
                "reading": budget.get("reading"), "epochs": budget.get("epochs"),
                "optimizer_steps": budget.get("optimizer_steps"),
                "clean_test_acc": run["clean_test_acc"],
                "unlearnable_test_acc": run["unlearnable_test_acc"],
                "random_test_acc": lookup(run, "baselines.random.mean"),
                "uc_below_random": lookup(run, "uc_advantage_over_random.mean"),
                "worst_case_unlearnable_test_acc": run.get("worst_case_unlearnable_test_acc"),
                "worst_case_defense": run.get("worst_case_defense")})
    return out


def seeds_markdown(lines: list[dict]) -> str:
    """The per-seed table: every run's figures and the optimizer steps stage 1 took."""
    heads = ["run", "global batch", "world size", "seed", "optimizer", "reading", "epochs",
             "stage-1 steps", "clean", "unlearnable", "random noise", "UC below random",
             "worst case"]
    out = ["# Per seed: every run of the report", "",
           "| " + " | ".join(heads) + " |", "|---|" + "---:|" * 3 + "---|---|" + "---:|" * 7]

    def cell(value: object, fmt: str = ".4f") -> str:
        return "-" if value is None else format(value, fmt) if isinstance(value, float) \
            else str(value)

    for r in lines:
        worst = cell(r["worst_case_unlearnable_test_acc"])
        if r["worst_case_defense"]:
            worst += f" ({r['worst_case_defense']})"
        cells = [r["run"], str(r["global_batch_size"]), str(r["world_size"]), cell(r["seed"]),
                 r["optimizer"], cell(r["reading"]), cell(r["epochs"]),
                 cell(r["optimizer_steps"]), cell(r["clean_test_acc"]),
                 cell(r["unlearnable_test_acc"]), cell(r["random_test_acc"]),
                 cell(r["uc_below_random"]), worst]
        out.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(out) + "\n"
