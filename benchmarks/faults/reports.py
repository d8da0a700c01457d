"""Report tries: ``hpcue report`` of damaged, NaN, Infinity or escaping results.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

from .core import Case, Ctx, Outcome, Try
from .inputs import user_file


def report_runs(ctx: Ctx, runs: dict[str, str | None]) -> Path:
    """A runs folder: per name a results.json (None: the finished run's) and its config.yaml."""
    root = ctx.work / "runs"
    for name, text in runs.items():
        (root / name).mkdir(parents=True)
        results = (ctx.finished / "results.json").read_text()
        (root / name / "results.json").write_text(results if text is None else text)
        shutil.copy(ctx.finished / "config.yaml", root / name / "config.yaml")
    return root


def report_try(name: str, runs: Callable[[dict], dict[str, str | None]], *expect: str,
               extra: Callable[[Path], object] | None = None) -> Try:
    def setup(ctx: Ctx) -> Case:
        good = json.loads((ctx.finished / "results.json").read_text())
        root = report_runs(ctx, runs(good))
        if extra is not None:
            extra(root)
        return Case(["report", str(root)], out=[root / "report"])
    return Try(f"report: {name}", setup, expect, needs=("run",))


def _with(results: dict, **changes: object) -> str:
    return json.dumps({**results, **changes})


def report_tries() -> list[Try]:
    def nan(good: dict) -> dict[str, str | None]:
        return {"a": _with(good, clean_test_acc="NAN").replace('"NAN"', "NaN")}

    def inf_seconds(good: dict) -> dict[str, str | None]:
        return {"a": _with(good, seconds={"train": "INF"}).replace('"INF"', "Infinity")}

    def report_file(ctx: Ctx) -> Case:
        root = report_runs(ctx, {"a": None})
        return Case(["report", str(root), "--out", str(user_file(ctx.work / "afile"))])

    def good_and_nan(ctx: Ctx) -> Case:
        good = json.loads((ctx.finished / "results.json").read_text())
        root = report_runs(ctx, {"a": None, "b": nan(good)["a"]})

        def check(o: Outcome) -> tuple[str, str] | None:
            text = (root / "report" / "report.md").read_text()
            csv = (root / "report" / "report.csv").read_text()
            if not any(ln.startswith("- b:") and "clean_test_acc" in ln
                       for ln in text.splitlines()):
                return "silent wrong", "the NaN run b is not listed as failed in report.md"
            if "nan" in csv.lower() or "inf" in csv.lower() or len(csv.splitlines()) != 2:
                return "silent wrong", "report.csv holds a NaN/Infinity, or not one row"
            return None
        return Case(["report", str(root)], out=[root / "report"], check=check)

    def escape_name(ctx: Ctx) -> Case:
        good = json.loads((ctx.finished / "results.json").read_text())
        root = report_runs(ctx, {"a": _with(good, dataset="../../../escape")})
        return Case(["report", str(root), "--out", str(ctx.work / "out")],
                    out=[ctx.work / "out"])

    return [
        report_try("results.json without its keys",
                   lambda good: {"a": json.dumps({"dataset": "digits"})},
                   "results.json", "global_batch_size"),
        report_try("results.json with NaN", nan, "results.json", "clean_test_acc"),
        report_try("results.json with Infinity", inf_seconds, "results.json", "seconds"),
        report_try("results.json not UTF-8", lambda good: {"a": None}, "results.json",
                   extra=lambda root: (root / "a/results.json").write_bytes(b'{"x": "\xff"}')),
        report_try("a damaged sweep.json beside a good run", lambda good: {"a": None},
                   "sweep.json", extra=lambda root: (root / "sweep.json").write_text("[")),
        Try("report: a runs directory that does not exist", lambda ctx: Case(
            ["report", str(ctx.work / "nope")]), ("nope",)),
        Try("report: --out that is a regular file", report_file, ("afile",), needs=("run",)),
        Try("control: report of a good run and a NaN run (the NaN run listed as failed)",
            good_and_nan, None, needs=("run",)),
        Try("control: report of a result whose dataset is ../../../escape", escape_name, None,
            needs=("run",)),
    ]

