"""Kill and lock tries: signals sent to a running stage, and a held run directory.

A stopped stage must say so in one line, exit 128 + the signal and keep its checkpoint to
resume from; a second command on a directory in use must name the holder.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from .core import (
    TINY,
    Case,
    Ctx,
    Outcome,
    Try,
    as_text,
    cli,
    environment,
    first_line,
    run_cli,
    sets,
)
from .inputs import hold_lock, protect_run, results_problem


def wait_for(proc: subprocess.Popen, path: Path, timeout: float) -> str | None:
    """None once ``path`` exists, else why it never did."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            return f"the command ended ({proc.returncode}) before {path.name} appeared"
        if time.monotonic() > deadline:
            return f"no {path} after {timeout:.0f} s"
        time.sleep(0.1)
    return None


def popen(case: Case, args: list[str]):
    out, err = tempfile.TemporaryFile(), tempfile.TemporaryFile()
    proc = subprocess.Popen(cli(*args), cwd=case.cwd, env=environment(case), stdout=out,
                            stderr=err)
    return proc, out, err


def collect(proc: subprocess.Popen, out, err, timeout: float) -> Outcome:
    try:
        rc: int | None = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        rc = None
    out.seek(0)
    err.seek(0)
    return Outcome(rc, as_text(out.read()), as_text(err.read()))


def kill_try(name: str, args: Callable[[Path], list[str]], wait: str, sig: str,
             fresh: bool = False) -> Try:
    """Start a stage, wait for its first epoch checkpoint ``wait``, send ``sig``: one line, exit
    128 + the signal, the checkpoint kept to resume from, nothing of the inputs lost."""
    def setup(ctx: Ctx) -> Case:
        run = ctx.work / "run" if fresh else ctx.run_copy(slim=True)
        case = Case(args(run), out=[run], stop=sig,
                    protect=[] if fresh else [run / n for n in ("data", "clusters.pt",
                                                                "surrogate.pt")])

        def runner(case: Case) -> Outcome:
            proc, out, err = popen(case, case.args)
            why = wait_for(proc, run / wait, 240)
            if why is None:
                proc.send_signal(signal.Signals[sig])
            o = collect(proc, out, err, 120)
            if why is not None:
                o.problem = ("unclear", why)
            elif not (run / wait).is_file():
                o.problem = ("data lost", f"{wait}, the point to resume from, is gone")
            return o
        case.runner = runner
        return case
    return Try(f"kill: {name}", setup, (sig, "resume"), needs=() if fresh else ("run",))


def prepare_1024_try() -> Try:
    """``data prepare digits --image-size 1024``: 5.6 GB of uint8 output, which the resize used
    to need about 22 GB of float work for. Whole, it takes minutes here, so it is stopped with
    SIGTERM after 25 s; the try reports the peak memory so far."""
    def setup(ctx: Ctx) -> Case:
        out = ctx.work / "d"
        case = Case(["data", "prepare", "digits", "--image-size", "1024", "--out", str(out)],
                    out=[out], stop="SIGTERM")

        def runner(case: Case) -> Outcome:
            proc, o_file, e_file = popen(case, case.args)
            peak, t0 = 0, time.monotonic()
            while time.monotonic() - t0 < 25 and proc.poll() is None:
                peak = max(peak, _peak_rss(proc.pid))
                time.sleep(0.2)
            ended = proc.poll() is not None
            if not ended:
                peak = max(peak, _peak_rss(proc.pid))
                proc.send_signal(signal.SIGTERM)
            o = collect(proc, o_file, e_file, 120)
            o.note = f"peak RSS {peak / 2**30:.2f} GiB in {time.monotonic() - t0:.0f} s"
            if ended and o.rc == 0:
                o.problem = ("ok", f"finished on its own; {o.note}")
            elif peak > 16 * 2**30:
                o.problem = ("unclear", f"memory not bounded: {o.note}")
            return o
        case.runner = runner
        return case
    return Try("kill: SIGTERM during data prepare digits --image-size 1024 (memory)", setup,
               ("SIGTERM",))


def _peak_rss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def kill_tries() -> list[Try]:
    return [
        kill_try("SIGTERM during stage-1 training",
                 lambda run: ["train", "--out", str(run), "--force", *sets("train.epochs=300")],
                 "checkpoints/train/last.ckpt", "SIGTERM"),
        kill_try("SIGINT during stage-1 training",
                 lambda run: ["train", "--out", str(run), "--force", *sets("train.epochs=300")],
                 "checkpoints/train/last.ckpt", "SIGINT"),
        kill_try("SIGTERM during the victims' training (evaluate)",
                 lambda run: ["evaluate", "--out", str(run), "--force", *sets("victim.epochs=300")],
                 "checkpoints/victims/last.ckpt", "SIGTERM"),
        kill_try("SIGTERM during surrogate pretraining (a fresh hpcue run)",
                 lambda run: ["run", "--out", str(run),
                              *sets(*TINY, "surrogate.pretrain_epochs=300")],
                 "checkpoints/surrogate/last.ckpt", "SIGTERM", fresh=True),
        prepare_1024_try(),
    ]


def lock_tries() -> list[Try]:
    def two_runs(ctx: Ctx) -> Case:
        run = ctx.work / "run"
        case = Case(["run", "--out", str(run), *sets(*TINY)], out=[run], timeout=300)

        def runner(case: Case) -> Outcome:
            first, out, err = popen(case, case.args)
            why = wait_for(first, run / "config.yaml", 240)
            second = run_cli(case)
            first_o = collect(first, out, err, 300)
            second.expect_more = [f"pid {first.pid}"]
            if why is not None:
                second.problem = ("unclear", why)
            elif first_o.rc != 0 or "Traceback" in first_o.stderr:
                second.problem = ("data lost", f"the first run failed ({first_o.rc}): "
                                               f"{first_line(first_o)}")
            else:
                second.problem = results_problem(run)
            return second
        case.runner = runner
        return case

    def held(ctx: Ctx) -> Case:
        run = ctx.run_copy()
        release = hold_lock(run / ".hpcue.lock")
        return Case(["evaluate", "--out", str(run)], out=[run], protect=protect_run(run),
                    cleanup=release)

    return [
        Try("lock: a second hpcue run while the first holds the directory", two_runs,
            ("in use by",)),
        Try("lock: hpcue evaluate on a directory another process holds", held,
            ("in use by", f"pid {os.getpid()}"), needs=("run",)),
    ]

