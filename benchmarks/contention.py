"""Contention: the real ``hpcue train`` stage, quiet and with one competing CPU-bound process.

Stage 1 (the heaviest stage) of the embedded default (digits, 16 px, generator width 16, two
blocks, batch 64) runs on copies of one prepared run directory, once on a quiet machine and
once beside a Python busy loop started here (one process, one core's worth of work) and killed
after. Each policy is a set of environment variables given to the ``hpcue`` subprocess (hpcue
leaves variables the user set alone), and the runs are interleaved: policy A quiet, A busy,
B quiet, B busy, ... repeated, so that noise from other work on the machine falls on all of
them alike. Reported: the train stage's seconds (from its record), the process's wall seconds
and CPU seconds (user + system), medians over the repeats with their min..max.

    python benchmarks/contention.py                     # old vs new wait policy, 3 repeats
    python benchmarks/contention.py --policies old new one passive1 --repeats 2 --epochs 2

Policies: ``old`` is libgomp's default (idle threads spin ~300000 times before sleeping: what
hpcue ran with before it chose a wait policy; GOMP_SPINCOUNT=300000 reproduces it), ``new`` is
what hpcue chooses now (nothing set here), ``passive`` sets OMP_WAIT_POLICY=PASSIVE itself,
``active`` OMP_WAIT_POLICY=ACTIVE, ``one`` one OpenMP thread with the old spinning and
``passive1`` one thread, passive.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

POLICIES = {
    "old": {"GOMP_SPINCOUNT": "300000"},
    "new": {},
    "passive": {"OMP_WAIT_POLICY": "PASSIVE"},
    "active": {"OMP_WAIT_POLICY": "ACTIVE"},
    "one": {"OMP_NUM_THREADS": "1", "GOMP_SPINCOUNT": "300000"},
    "passive1": {"OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"},
}
_OURS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME", "OMP_NUM_THREADS")
CMD = [sys.executable, "-m", "hpcue.cli"]


def clean_env(policy: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _OURS}
    return {**env, **POLICIES[policy]}


def timed(cmd: list[str], env: dict[str, str]) -> float:
    """Wall seconds of one subprocess; exits with its stderr if it fails."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    _, err = proc.communicate()
    wall = time.perf_counter() - t0
    if proc.returncode:
        sys.exit(f"{' '.join(cmd)} failed:\n{err[-3000:]}")
    return wall


def run_once(base: Path, work: Path, policy: str, sets: list[str]) -> dict[str, float]:
    run = work / "run"
    shutil.rmtree(run, ignore_errors=True)
    shutil.copytree(base, run)
    before = os.times()
    wall = timed([*CMD, "train", "-q", "--out", str(run), *sets], clean_env(policy))
    after = os.times()
    cpu = (after.children_user - before.children_user) + (
        after.children_system - before.children_system)
    stage = json.loads((run / "stages" / "train.json").read_text())["seconds"]
    return {"stage": stage, "wall": wall, "cpu": cpu}


def busy_loop() -> subprocess.Popen:
    """One CPU-bound competitor: a Python busy loop (one thread, no OpenMP)."""
    return subprocess.Popen([sys.executable, "-c", "while True: pass"],
                            start_new_session=True)


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def fmt(values: list[float]) -> str:
    return f"{statistics.median(values):7.1f} ({min(values):.1f}..{max(values):.1f})"


def report(results: dict[tuple[str, str], list[dict[str, float]]], policies: list[str],
           repeats: int, epochs: int) -> None:
    def median(policy: str, load: str, key: str = "stage") -> float:
        return statistics.median(r[key] for r in results[(policy, load)])

    print(f"\nmedians (min..max) over {repeats} repeats, seconds; {epochs} stage-1 epochs")
    print(f"{'policy':>8} {'load':>5} {'train stage':>22} {'process wall':>22} "
          f"{'process cpu':>22}")
    for (policy, load), rs in results.items():
        print(f"{policy:>8} {load:>5} {fmt([r['stage'] for r in rs]):>22} "
              f"{fmt([r['wall'] for r in rs]):>22} {fmt([r['cpu'] for r in rs]):>22}")
    # a "quiet" run of a spinning policy suffers from any other load on the machine (other
    # users' work): busy over the best quiet median of all policies says that too
    best = min(median(p, "quiet") for p in policies)
    print("busy / best quiet median: " + " ".join(
        f"{median(p, 'busy') / best:.1f}x ({p})" for p in policies))
    if "old" in policies and "new" in policies:
        print(f"quiet new/old {median('new', 'quiet') / median('old', 'quiet'):.2f}")
    print("contention: busy/quiet " + " ".join(
        f"{median(p, 'busy') / median(p, 'quiet'):.1f}x ({p} policy)" for p in policies))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--policies", nargs="+", default=["old", "new"], choices=sorted(POLICIES))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=2, help="stage-1 epochs per measurement")
    ap.add_argument("--set", dest="sets", action="append", default=[],
                    help="more config overrides for every run (KEY=VALUE)")
    args = ap.parse_args()
    sets = [x for s in [f"train.epochs={args.epochs}", *args.sets] for x in ("--set", s)]
    results: dict[tuple[str, str], list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "base"
        print(f"preparing {base} (prepare + cluster, 2 surrogate epochs) ...", flush=True)
        timed([*CMD, "cluster", "-q", "--out", str(base), "--set",
               "surrogate.pretrain_epochs=2", *sets], clean_env("new"))
        for rep in range(args.repeats):
            for policy in args.policies:
                for load in ("quiet", "busy"):
                    competitor = busy_loop() if load == "busy" else None
                    try:
                        r = run_once(base, Path(tmp), policy, sets)
                    finally:
                        if competitor is not None:
                            stop(competitor)
                    results.setdefault((policy, load), []).append(r)
                    print(f"  repeat {rep + 1} {policy:>8} {load:>5}: stage {r['stage']:6.1f} s"
                          f"  wall {r['wall']:6.1f} s  cpu {r['cpu']:6.1f} s", flush=True)
    report(results, args.policies, args.repeats, args.epochs)


if __name__ == "__main__":
    main()
