"""Submit a sweep's points to Slurm or LSF, run them here, or say where each one stands.

The sweep directory (``runs/<sweep>/``) keeps ``sweep.json`` (what spec it was written for),
the rendered scripts under ``jobs/`` and ``submitted.json`` (job ids). A point with a
``results.json`` is finished and skipped; a rerun of a stopped point resumes it.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from hpcue.errors import ConfigError, HpcueError
from hpcue.io import atomic_write_json, read_json
from hpcue.stages.rundir import RunDir
from hpcue.sweep.points import Point, Sweep
from hpcue.sweep.render import (
    check_account,
    cluster_digest,
    cluster_job_dir,
    cluster_jobs,
    clusters_ready,
    point_dir,
    render,
    run_command,
    sweep_dir,
)

SUBMIT = {"slurm": "sbatch", "lsf": "bsub"}
QUEUE = {"slurm": ["squeue", "-h", "-o", "%i"], "lsf": ["bjobs", "-noheader", "-o", "jobid"]}


class SchedulerError(HpcueError, RuntimeError):
    """sbatch/bsub or squeue/bjobs failed or is missing: nothing more is submitted."""


def claim_sweep_dir(sweep: Sweep, runs: Path) -> Path:
    """Create or reopen the sweep directory; refuse one written for a different spec."""
    root = sweep_dir(sweep, runs)
    manifest = root / "sweep.json"
    if manifest.is_file():
        old = read_json(manifest)
        if old.get("digest") != sweep.digest():
            raise ConfigError(f"{root} was written for another sweep (digest {old.get('digest')}, "
                              f"now {sweep.digest()}: the spec, its machine profile or the "
                              f"hpcue version that reads them changed): rename the sweep or "
                              f"use another runs directory")
    else:
        atomic_write_json(manifest, {"digest": sweep.digest(), "spec": str(sweep.source),
                                     "machine": sweep.machine.name,
                                     "points": [p.name for p in sweep.points],
                                     "seeds": sweep.spec.seeds})
    return root


def finished(sweep: Sweep, runs: Path) -> set[str]:
    return {p.name for p in sweep.points if RunDir(point_dir(sweep, p, runs)).finished}


def _job_id(output: str) -> str:
    m = re.search(r"Submitted batch job (\d+)", output) or re.search(r"Job <(\d+)>", output)
    if not m:
        raise SchedulerError(f"could not read a job id from: {output.strip()!r}")
    return m.group(1)


def _queued(scheduler: str) -> set[str] | None:
    """Job ids in the queue (pending or running); None when the queue cannot be read here."""
    args = QUEUE[scheduler]
    if shutil.which(args[0]) is None:
        return None
    proc = subprocess.run(args, capture_output=True, text=True)
    if scheduler == "lsf" and "No unfinished job found" in proc.stdout + proc.stderr:
        return set()  # bjobs exits 255 with this line when the user has nothing queued
    if proc.returncode:
        return None
    return {job.split("[")[0] for job in proc.stdout.split()}  # array jobs: 123[4] -> 123


def _submit_script(tool: str, scheduler: str, script: Path, after: str | None) -> str:
    """Submit one script, waiting for job ``after`` to succeed (a job whose dependency fails is
    ended by the scheduler instead of pending forever); returns the job id."""
    deps: list[str] = []
    if after is not None:
        deps = ([f"--dependency=afterok:{after}", "--kill-on-invalid-dep=yes"]
                if scheduler == "slurm" else ["-w", f"done({after})", "-ti"])
    with script.open() as fh:  # sbatch reads the file, bsub its standard input
        proc = subprocess.run([tool, *deps, str(script)] if scheduler == "slurm" else [tool, *deps],
                              stdin=None if scheduler == "slurm" else fh,
                              capture_output=True, text=True)
    if proc.returncode:
        raise SchedulerError(f"{tool} {script} failed: {proc.stderr.strip()}")
    return _job_id(proc.stdout)


def submit(sweep: Sweep, runs: Path = Path("runs")) -> dict[str, str]:
    """Render and submit every point that is neither finished nor in the queue, after the job
    that computes its shared clusters (submitted first, unless they exist or it is queued).

    Returns {point or clusters-<hash>: job id} of this call. A job still pending or running is
    left alone (two jobs on one run directory would race); so the queue must be readable.
    Each job's run directory is created right before it is submitted (its log goes there,
    and the scheduler needs the folder to exist); render creates none.
    """
    scheduler = sweep.machine.scheduler
    check_account(sweep)  # before the sweep directory is claimed: nothing written for it
    root = claim_sweep_dir(sweep, runs)
    scripts = {path.stem: path for path in render(sweep, scheduler, root / "jobs", runs)}
    tool = shutil.which(SUBMIT[scheduler])
    if tool is None:
        raise SchedulerError(f"{SUBMIT[scheduler]} not found on PATH: is this a {scheduler} "
                             f"login node?")
    queued = _queued(scheduler)
    if queued is None:
        raise SchedulerError(f"cannot read the queue with `{' '.join(QUEUE[scheduler])}`, so "
                             f"cannot tell which points are already queued; nothing submitted")
    done = finished(sweep, runs)
    record_path = root / "submitted.json"
    record = read_json(record_path) if record_path.is_file() else {}
    new: dict[str, str] = {}

    def send(name: str, after: str | None = None) -> str:
        new[name] = _submit_script(tool, scheduler, scripts[name], after)
        record.setdefault(name, []).append(new[name])
        atomic_write_json(record_path, record)
        print(f"[hpcue] {name}: job {new[name]}" + (f" (after job {after})" if after else ""))
        return new[name]

    todo = []
    for point in sweep.points:
        jobs = record.get(point.name, [])
        if point.name in done:
            print(f"[hpcue] {point.name}: finished, skipped")
        elif jobs and jobs[-1] in queued:
            print(f"[hpcue] {point.name}: job {jobs[-1]} still queued or running, skipped")
        else:
            todo.append(point)
    waits: dict[str, str | None] = {}
    if sweep.spec.share_clusters:
        for digest in dict.fromkeys(cluster_digest(p) for p in todo):
            name, jobs = f"clusters-{digest}", record.get(f"clusters-{digest}", [])
            if clusters_ready(sweep, digest, runs):
                waits[digest] = None
            elif jobs and jobs[-1] in queued:
                waits[digest] = jobs[-1]
            else:
                cluster_job_dir(sweep, digest, runs).mkdir(parents=True, exist_ok=True)
                waits[digest] = send(name)
    for point in todo:
        point_dir(sweep, point, runs).mkdir(parents=True, exist_ok=True)
        send(point.name, waits.get(cluster_digest(point)))
    return new


def _state(jobs: list[str], queued: set[str] | None, done: bool, what: str) -> str:
    if done:
        return what
    if jobs and queued is None:
        return f"submitted (job {jobs[-1]}); the queue is not readable here"
    if jobs and jobs[-1] in queued:
        return f"queued or running (job {jobs[-1]})"
    if jobs:
        return f"stopped without results (job {jobs[-1]}): submit again to resume"
    return "not submitted"


def status(sweep: Sweep, runs: Path = Path("runs")) -> dict[str, str]:
    """{point: finished | queued (job) | stopped (job) | not submitted}, and the same for
    each shared-clusters job (ready when its clusters exist)."""
    root = sweep_dir(sweep, runs)
    record_path = root / "submitted.json"
    record = read_json(record_path) if record_path.is_file() else {}
    queued = _queued(sweep.machine.scheduler)
    done = finished(sweep, runs)
    states = {f"clusters-{d}": _state(record.get(f"clusters-{d}", []), queued,
                                      clusters_ready(sweep, d, runs), "ready")
              for d in cluster_jobs(sweep)}
    states |= {p.name: _state(record.get(p.name, []), queued, p.name in done, "finished")
               for p in sweep.points}
    return states


def local_command(sweep: Sweep, point: Point, runs: Path, mpiexec: int | None) -> list[str]:
    """``hpcue run`` for one point, in this Python (optionally under mpiexec -n N)."""
    cmd = [sys.executable, "-m", "hpcue.cli", *run_command(sweep, point, runs)[1:]]
    if mpiexec:
        cmd = [str(Path(sys.executable).parent / "mpiexec"), "-n", str(mpiexec), *cmd]
    return cmd


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def run_failure(returncode: int, run_dir: Path) -> str | None:
    """Why a point's run failed (None: it finished): a non-zero exit status, a signal (a
    negative return code), or no results.json even so."""
    if returncode < 0:
        return f"killed by {_signal_name(-returncode)}"
    if returncode > 128:  # how a shell, and hpcue itself, report a stopping signal
        return f"exit status {returncode} (stopped by {_signal_name(returncode - 128)}?)"
    if returncode:
        return f"exit status {returncode}"
    if not RunDir(run_dir).finished:
        return f"exit status 0 but no {RunDir.RESULTS}"
    return None


def run_local(sweep: Sweep, runs: Path = Path("runs"), mpiexec: int | None = None) -> list[str]:
    """Every unfinished point on this machine, one after another; returns the points that
    failed (each also printed with why), the others going on after a failure."""
    claim_sweep_dir(sweep, runs)
    done, failed = finished(sweep, runs), []
    total = len(sweep.points)
    for i, point in enumerate(sweep.points, 1):
        if point.name in done:
            print(f"[hpcue] {point.name}: finished, skipped")
            continue
        cmd = local_command(sweep, point, runs, mpiexec)
        # where a long study stands: this point's place, how many are finished and failed
        print(f"[hpcue] point {i} of {total} ({len(done)} finished, {len(failed)} failed so "
              f"far) {point.name}: {' '.join(cmd[-4:])} ...", flush=True)
        why = run_failure(subprocess.run(cmd).returncode, point_dir(sweep, point, runs))
        if why:
            print(f"[hpcue] {point.name}: failed ({why})", flush=True)
            failed.append(point.name)
        else:
            done.add(point.name)
    return failed
