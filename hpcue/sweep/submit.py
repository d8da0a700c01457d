"""Submit a sweep's points to Slurm or LSF, run them here, or say where each one stands.

The sweep directory (``runs/<sweep>/``) keeps ``sweep.json`` (what spec it was written for),
the rendered scripts under ``jobs/`` and ``submitted.json`` (job ids). A point with a
``results.json`` is finished and skipped; a rerun of a stopped point resumes it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from hpcue.errors import ConfigError, HpcueError
from hpcue.io import atomic_write_json, read_json
from hpcue.stages.rundir import RunDir
from hpcue.sweep.render import point_dir, render, run_command, sweep_dir
from hpcue.sweep.spec import Sweep

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
            raise ConfigError(f"{root} was written by a different sweep spec (digest "
                              f"{old.get('digest')}, this spec {sweep.digest()}): rename the "
                              f"sweep or use another runs directory")
    else:
        atomic_write_json(manifest, {"digest": sweep.digest(), "spec": str(sweep.source),
                                     "machine": sweep.machine.name,
                                     "points": [p.name for p in sweep.points]})
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


def submit(sweep: Sweep, runs: Path = Path("runs")) -> dict[str, str]:
    """Render and submit every point that is neither finished nor in the queue.

    Returns {point: job id} of this call. A point whose last job is still pending or running
    is left alone (two jobs on one run directory would race); so the queue must be readable.
    """
    scheduler = sweep.machine.scheduler
    root = claim_sweep_dir(sweep, runs)
    scripts = render(sweep, scheduler, root / "jobs", runs)
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
    new = {}
    for point, script in zip(sweep.points, scripts, strict=True):
        jobs = record.get(point.name, [])
        if point.name in done:
            print(f"[hpcue] {point.name}: finished, skipped")
            continue
        if jobs and jobs[-1] in queued:
            print(f"[hpcue] {point.name}: job {jobs[-1]} still queued or running, skipped")
            continue
        point_dir(sweep, point, runs).mkdir(parents=True, exist_ok=True)
        with script.open() as fh:  # sbatch reads the file, bsub its standard input
            proc = subprocess.run([tool, str(script)] if scheduler == "slurm" else [tool],
                                  stdin=None if scheduler == "slurm" else fh,
                                  capture_output=True, text=True)
        if proc.returncode:
            raise SchedulerError(f"{tool} {script} failed: {proc.stderr.strip()}")
        new[point.name] = _job_id(proc.stdout)
        record.setdefault(point.name, []).append(new[point.name])
        atomic_write_json(record_path, record)
        print(f"[hpcue] {point.name}: job {new[point.name]}")
    return new


def status(sweep: Sweep, runs: Path = Path("runs")) -> dict[str, str]:
    """{point: finished | queued (job) | stopped (job) | not submitted}."""
    root = sweep_dir(sweep, runs)
    record_path = root / "submitted.json"
    record = read_json(record_path) if record_path.is_file() else {}
    queued = _queued(sweep.machine.scheduler)
    done = finished(sweep, runs)
    states = {}
    for p in sweep.points:
        jobs = record.get(p.name, [])
        if p.name in done:
            states[p.name] = "finished"
        elif jobs and queued is None:
            states[p.name] = f"submitted (job {jobs[-1]}); the queue is not readable here"
        elif jobs and jobs[-1] in queued:
            states[p.name] = f"queued or running (job {jobs[-1]})"
        elif jobs:
            states[p.name] = f"stopped without results (job {jobs[-1]}): submit again to resume"
        else:
            states[p.name] = "not submitted"
    return states


def run_local(sweep: Sweep, runs: Path = Path("runs"), mpiexec: int | None = None) -> list[str]:
    """Every unfinished point on this machine, one after another (optionally mpiexec -n N)."""
    claim_sweep_dir(sweep, runs)
    done, failed = finished(sweep, runs), []
    for point in sweep.points:
        if point.name in done:
            print(f"[hpcue] {point.name}: finished, skipped")
            continue
        cmd = [sys.executable, "-m", "hpcue.cli", *run_command(sweep, point, runs)[1:]]
        if mpiexec:
            cmd = [str(Path(sys.executable).parent / "mpiexec"), "-n", str(mpiexec), *cmd]
        print(f"[hpcue] {point.name}: {' '.join(cmd[-4:])} ...", flush=True)
        if subprocess.run(cmd).returncode:
            failed.append(point.name)
    return failed
