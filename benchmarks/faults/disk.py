"""Full-disk tries: commands writing into a small or full tmpfs (root only).

Each must fail with one error, leave no partial result and keep the old results.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from tests.fabricate import fill_disk

from .core import Case, Ctx, Outcome, Try
from .inputs import mount_tmpfs, protect_run
from .reports import report_runs
from .sweeps import sweep_case


def full_disk_tries() -> list[Try]:
    def prepare_case(ctx: Ctx) -> Case:
        disk = ctx.work / "disk"
        case = Case(["data", "prepare", "digits", "--image-size", "32", "--shards", "2",
                     "--out", str(disk / "d")], out=[disk])
        case.cleanup = mount_tmpfs(disk, "2m")
        case.check = lambda o: (("unclear", f"left {sorted(p.name for p in disk.iterdir())}")
                                if any(disk.iterdir()) else None)
        return case

    def stage_case(stage: str, leave: int) -> Callable[[Ctx], Case]:
        def setup(ctx: Ctx) -> Case:
            disk = ctx.work / "disk"
            umount = mount_tmpfs(disk, "16m")
            try:
                run = ctx.run_copy(disk / "run", slim=True)
                fill_disk(disk, leave)
            except BaseException:
                umount()
                raise
            return Case([stage, "--out", str(run)], out=[run], protect=protect_run(run),
                        cleanup=umount, check=lambda o: _disk_notes(o, run))
        return setup

    def report_case(ctx: Ctx) -> Case:
        runs = report_runs(ctx, {"a": None})
        disk = ctx.work / "disk"
        umount = mount_tmpfs(disk, "1m")
        fill_disk(disk, 0)
        return Case(["report", str(runs), "--out", str(disk / "report")], out=[disk / "report"],
                    cleanup=umount)

    def render_case(ctx: Ctx) -> Case:
        case = sweep_case(ctx, {})
        disk = ctx.work / "disk"
        umount = mount_tmpfs(disk, "1m")
        fill_disk(disk, 0)
        case.args[case.args.index("--out") + 1] = str(disk / "jobs")
        case.out = [disk / "jobs", ctx.work / "runs"]
        case.cleanup = umount
        return case

    return [
        Try("full disk: data prepare digits into a 2 MiB tmpfs", prepare_case,
            ("no space left",), root_only=True),
        Try("full disk: generate with 256 KiB left (old unlearnable set kept)",
            stage_case("generate", 256 * 1024), ("no space left",), needs=("run",),
            root_only=True),
        Try("full disk: train with 256 KiB left (1.2 MB epoch checkpoints)",
            stage_case("train", 256 * 1024), ("no space left",), needs=("run",), root_only=True),
        Try("full disk: report into a full tmpfs", report_case, ("no space left",),
            needs=("run",), root_only=True),
        Try("full disk: sweep render into a full tmpfs", render_case, ("no space left",),
            root_only=True),
    ]


def _disk_notes(o: Outcome, run: Path) -> None:
    """Note what a full disk left in a run directory: epoch checkpoints that do not load (a
    partial file under its final name) and results still set aside in .replaced."""
    import torch

    notes = []
    for ckpt in sorted(run.glob("checkpoints/*/*.ckpt")):
        try:
            torch.load(ckpt, map_location="cpu", weights_only=True)
        except Exception:
            size = ckpt.stat().st_size
            notes.append(f"{ckpt.relative_to(run)} ({size} bytes) does not load")
    if (run / ".replaced").is_dir():
        moved = json.loads((run / ".replaced/moved.json").read_text())
        notes.append(f".replaced/ still holds {', '.join(moved)}")
    o.note = "; ".join(notes)

