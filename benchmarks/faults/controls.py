"""Controls: commands whose success is the right outcome.

The first two make the shared inputs (the 8-px digits and the finished tiny run) that the
other tries copy; the rest check that a good input still passes.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from .core import TINY, Case, Ctx, Outcome, Try, cli, environment, first_line, run_cli, sets
from .inputs import flip_image_byte, image_folder, results_problem
from .reports import report_runs
from .sweeps import render_control


def base_prepare(ctx: Ctx) -> Case:
    return Case(["data", "prepare", "digits", "--image-size", "8", "--shards", "2", "--out",
                 str(ctx.digits)], out=[ctx.digits])


def base_run(ctx: Ctx) -> Case:
    run = ctx.finished
    return Case(["run", "--out", str(run), *sets(*TINY)], out=[run], timeout=400,
                check=lambda o: results_problem(run))


def resumed_prepare(ctx: Ctx) -> Case:
    """Item 7: a prepare killed after its shards (meta.json never written), one shard's pixels
    flipped since, then the same prepare again: it must rewrite the shard, and verify pass."""
    root = image_folder(ctx.work / "raw", per_class=8)
    out = ctx.work / "out"
    args = ["data", "prepare", "imagefolder", "--root", str(root), "--out", str(out),
            "--image-size", "16", "--shards", "3"]
    first = subprocess.run(cli(*args), env=environment(Case([])), capture_output=True,
                           text=True, timeout=240)
    if first.returncode:
        raise RuntimeError(f"the first prepare failed: {first.stderr[-300:]}")
    shard = out / "train-00001-of-00003.h5"
    good = shard.read_bytes()
    meta = json.loads((out / "meta.json").read_text())
    (out / "prepare.json").write_text(json.dumps(meta["recipe"]))
    (out / "meta.json").unlink()
    flip_image_byte(shard)

    def runner(case: Case) -> Outcome:
        o = run_cli(case)
        if o.rc != 0:
            return o
        verify = run_cli(case, ["data", "verify", str(out)])
        if verify.rc != 0:
            verify.problem = ("silent wrong", f"prepare said OK, verify did not: "
                                              f"{first_line(verify)}")
            verify.rc = 0
            return verify
        if shard.read_bytes() != good:
            o.problem = ("silent wrong", "the damaged shard was kept")
        o.note = first_line(verify)
        return o
    return Case(args, out=[out], runner=runner)


def user_file_kept(ctx: Ctx) -> Case:
    """A prepare into a folder holding another recipe's unfinished shards and a user's own
    file: the shards go, the user's file stays."""
    out = ctx.work / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine\n")
    (out / "prepare.json").write_text(json.dumps({"dataset": "digits", "image_size": 64}))
    (out / "train-00000-of-00009.h5").write_bytes(b"old recipe")

    def check(o: Outcome) -> tuple[str, str] | None:
        if (out / "notes.txt").read_text() != "mine\n":
            return "data lost", "the user's notes.txt changed"
        return None
    return Case(["data", "prepare", "digits", "--image-size", "8", "--shards", "2", "--out",
                 str(out)], out=[out], check=check)


def _info(o: Outcome) -> tuple[str, str] | None:
    info = json.loads(o.stdout)
    o.note = f"{info['dataset']}: {info['splits']}"
    return None


def controls() -> list[Try]:
    def finished_run(ctx: Ctx) -> Path:
        return ctx.finished
    return [
        Try("control: data prepare digits (8 px, 2 shards), shared by the data tries",
            base_prepare, None),
        Try("control: the finished tiny run, shared (copied) by the run tries", base_run, None),
        Try("control: data verify of the run's data", lambda ctx: Case(
            ["data", "verify", str(finished_run(ctx) / "data")]), None, needs=("run",)),
        Try("control: data info of the run's unlearnable set", lambda ctx: Case(
            ["data", "info", str(finished_run(ctx) / "unlearnable")], check=_info),
            None, needs=("run",)),
        Try("control: sweep render configs/sweeps/digits-local.yaml --scheduler slurm",
            render_control, None),
        Try("control: report on a copy of the finished run", lambda ctx: Case(
            ["report", str(report_runs(ctx, {"a": None}))], out=[ctx.work / "runs/report"]),
            None, needs=("run",)),
        Try("control: a resumed prepare rewrites a damaged shard, then verify", resumed_prepare,
            None),
        Try("control: prepare over another recipe's shards keeps the user's own file",
            user_file_kept, None),
    ]

