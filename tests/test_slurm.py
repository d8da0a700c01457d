"""A real one-node Slurm (slurmctld + slurmd + munge, started by .ci/slurm-up.sh): an sbatch job
whose srun starts 2 tasks of ``hpcue run``, checked against one process.

CI starts Slurm before pytest (.ci/run) and stops it after; elsewhere the ``slurm`` fixture
starts it only as root with slurm-wlm installed, and stops again what it started."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.test_distributed import DIST, _env, assert_matches_one_process, one_process  # noqa: F401

BIN = Path(sys.executable).parent


# a job's states once it has ended (its output written): scontrol keeps them for MinJobAge
ENDED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY",
         "BOOT_FAIL", "DEADLINE", "PREEMPTED"}


def sbatch_wait(args: list[str], env: dict, timeout: float = 900) -> subprocess.CompletedProcess:
    """``sbatch --wait`` without its back-off (it asks the queue at 2, 4, 8 ... 32 s): submit,
    then ask twice a second; the return code is the job's exit code, as --wait's is."""
    sub = subprocess.run(["sbatch", "--parsable", *args], env=env, capture_output=True,
                         text=True, timeout=120)
    if sub.returncode != 0:
        return sub
    job = sub.stdout.strip().split(";")[0]
    deadline = time.monotonic() + timeout
    while True:
        info = subprocess.run(["scontrol", "-o", "show", "job", job], capture_output=True,
                              text=True).stdout
        state = re.search(r"JobState=(\S+)", info)
        if state and state.group(1) in ENDED:
            break
        assert time.monotonic() < deadline, f"job {job} did not end: {info}"
        time.sleep(0.5)
    code = int(re.search(r"ExitCode=(\d+):", info).group(1))
    return subprocess.CompletedProcess(sub.args, code, sub.stdout, sub.stderr + info)


#: the daemons .ci/slurm-up.sh starts (Debian's slurm-wlm and munge packages)
DAEMONS = ("munged", "slurmctld", "slurmd")


@dataclass(frozen=True)
class SlurmPlan:
    """What the ``slurm`` fixture does: run .ci/slurm-up.sh, run .ci/slurm-down.sh at the
    module's end, or skip the module (``skip``: why)."""

    start: bool = False
    stop: bool = False
    skip: str | None = None


def slurm_plan(up: bool, root: bool, installed: bool, running: tuple[str, ...]) -> SlurmPlan:
    """A Slurm already up (CI's, or the user's) is used and left running; one the fixture
    brings up it stops again, unless some of its daemons ran before (someone's own, half up:
    left as found); where none can be started (not root, nothing installed) the tests skip."""
    if up:
        return SlurmPlan()
    if not root:
        return SlurmPlan(skip="Slurm is not running here, and .ci/slurm-up.sh must run as root "
                              "to start it (CI starts it before pytest)")
    if not installed:
        return SlurmPlan(skip=f"Slurm is not running here, and {', '.join(DAEMONS)} are not "
                              f"installed (slurm-wlm, munge): run .ci/slurm-up.sh yourself, "
                              f"which installs them, to test against Slurm")
    return SlurmPlan(start=True, stop=not running)


def _slurm_up() -> bool:
    """Whether a Slurm answers here with its node ready to run jobs."""
    if shutil.which("sinfo") is None:
        return False
    try:  # without a controller sinfo retries for a while
        proc = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True,
                              timeout=60)
    except subprocess.TimeoutExpired:
        return False
    return proc.stdout.strip() in ("idle", "mixed")


def _installed() -> bool:
    path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    return all(shutil.which(name, path=path) for name in DAEMONS)


def _running() -> tuple[str, ...]:
    return tuple(name for name in DAEMONS
                 if subprocess.run(["pgrep", "-x", name], capture_output=True).returncode == 0)


def _slurm_down() -> None:
    subprocess.run(["bash", str(REPO / ".ci" / "slurm-down.sh")], capture_output=True,
                   text=True, timeout=300)


@pytest.fixture(scope="module")
def slurm():
    """The cluster CI started (used, left running); else one brought up here as CI does,
    stopped at the module's end; else the module skips, saying why."""
    plan = slurm_plan(_slurm_up(), os.geteuid() == 0, _installed(), _running())
    if plan.skip:
        pytest.skip(plan.skip)
    if plan.start:
        up = subprocess.run(["bash", str(REPO / ".ci" / "slurm-up.sh")], capture_output=True,
                            text=True, timeout=600)
        if up.returncode != 0:
            if plan.stop:
                _slurm_down()
            pytest.fail(f".ci/slurm-up.sh failed:\n{up.stdout}\n{up.stderr}")
    try:
        yield shutil.which("sbatch")
    finally:
        if plan.stop:
            _slurm_down()


@pytest.mark.parametrize("up,root,installed,running,plan", [
    # CI's Slurm, or the user's: used and left running, as root or not
    (True, True, True, DAEMONS, SlurmPlan()),
    (True, False, True, DAEMONS, SlurmPlan()),
    # down, and nothing of it running: started here, so stopped here
    (False, True, True, (), SlurmPlan(start=True, stop=True)),
    # half up (someone's munged or slurmctld): brought up, then left as it was found running
    (False, True, True, ("munged",), SlurmPlan(start=True, stop=False)),
    (False, False, True, (), SlurmPlan(skip="Slurm is not running here, and .ci/slurm-up.sh "
                                            "must run as root to start it (CI starts it before "
                                            "pytest)")),
    (False, True, False, (), SlurmPlan(skip="Slurm is not running here, and munged, slurmctld, "
                                           "slurmd are not installed (slurm-wlm, munge): run "
                                           ".ci/slurm-up.sh yourself, which installs them, to "
                                           "test against Slurm")),
])
def test_the_slurm_fixture_stops_only_what_it_started_and_skips_saying_why(up, root, installed,
                                                                          running, plan):
    assert slurm_plan(up, root, installed, running) == plan


def test_sbatch_srun_two_tasks(slurm, one_process, tmp_path):  # noqa: F811
    out = tmp_path / "run"
    script = tmp_path / "job.sbatch"
    script.write_text("\n".join([
        "#!/bin/bash",
        "#SBATCH --job-name=hpcue-test",
        "#SBATCH --nodes=1",
        "#SBATCH --ntasks-per-node=2",
        "#SBATCH --time=00:15:00",
        f"#SBATCH --output={tmp_path}/slurm-%j.out",
        "export OMP_NUM_THREADS=1",
        f"srun {BIN / 'hpcue'} run --out {out} " + " ".join(DIST),
        "",
    ]))
    proc = sbatch_wait(["--chdir", str(REPO), str(script)], _env())
    logs = "".join(p.read_text() for p in tmp_path.glob("slurm-*.out"))
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}\n{logs[-4000:]}"
    assert "launcher=slurm world_size=2 nodes=1 ranks_per_node=2 backend=gloo" in logs
    assert_matches_one_process(out, one_process, "slurm")


def test_sweep_submitted_to_slurm_then_reported(slurm, tmp_path):
    import csv
    import json
    import os
    import time

    import yaml

    runs = tmp_path / "runs"
    env = _env(PATH=f"{BIN}:{os.environ['PATH']}")
    data = yaml.safe_load((REPO / "configs" / "sweeps" / "digits-local.yaml").read_text())
    data.update(global_batch_sizes=[32, 64], seeds=[0])  # two points: the path, not the study
    spec = tmp_path / "digits-local.yaml"
    spec.write_text(yaml.safe_dump(data))
    proc = subprocess.run([str(BIN / "hpcue"), "sweep", "submit", spec, "--runs", str(runs)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    jobs = json.loads((runs / "digits-local" / "submitted.json").read_text())
    ids = {v[-1] for v in jobs.values()}
    assert len(ids) == 3  # the shared clusters' job, then the two points that wait for it
    (cluster_job,) = [k for k in jobs if k.startswith("clusters-")]
    assert f"(after job {jobs[cluster_job][-1]})" in proc.stdout
    # submitted again while they are queued or running: left alone, never a second job
    early = subprocess.run([str(BIN / "hpcue"), "sweep", "submit", spec, "--runs", str(runs)],
                           cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert early.returncode == 0, early.stderr
    assert early.stdout.count("still queued or running, skipped") == 2, early.stdout
    assert json.loads((runs / "digits-local" / "submitted.json").read_text()) == jobs
    deadline = time.monotonic() + 900
    while ids & set(subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True,
                                   text=True).stdout.split()):
        assert time.monotonic() < deadline, "sweep jobs did not finish"
        time.sleep(2)
    status = subprocess.run([str(BIN / "hpcue"), "sweep", "status", spec, "--runs", str(runs)],
                            cwd=REPO, env=env, capture_output=True, text=True).stdout
    assert status.count(": finished") == 2 and f"{cluster_job}: ready" in status, status
    logs = "".join(p.read_text() for p in runs.rglob("slurm-*.out"))
    assert logs.count("launcher=slurm world_size=2") == 2  # the points
    clusters_log = "".join(p.read_text() for p in (runs / "digits-local" / "cluster-jobs")
                           .rglob("slurm-*.out"))
    assert clusters_log.count("launcher=slurm world_size=1") == 1  # the clusters job: one rank
    for point in ("digits-b32-s0", "digits-b64-s0"):  # both reused the clusters job's clusters
        record = json.loads((runs / "digits-local" / point / "stages" / "cluster.json")
                            .read_text())
        assert record["reused_from"].endswith(f"digits-local/clusters/{cluster_job[9:]}")

    # a second submit skips the finished points
    again = subprocess.run([str(BIN / "hpcue"), "sweep", "submit", spec, "--runs", str(runs)],
                           cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert again.stdout.count("finished, skipped") == 2
    # a queue that cannot be read (here: an empty Slurm config; a missing one makes squeue
    # retry for a minute first) submits nothing
    (tmp_path / "empty.conf").write_text("")
    blind = subprocess.run([str(BIN / "hpcue"), "sweep", "submit", spec, "--runs", str(runs)],
                           cwd=REPO, env={**env, "SLURM_CONF": str(tmp_path / "empty.conf")},
                           capture_output=True, text=True, timeout=120)
    assert blind.returncode == 2 and "cannot read the queue with `squeue" in blind.stderr
    assert json.loads((runs / "digits-local" / "submitted.json").read_text()) == jobs

    hpcue_report = subprocess.run([str(BIN / "hpcue"), "report", str(runs)], cwd=REPO, env=env,
                                  capture_output=True, text=True)
    assert hpcue_report.returncode == 0, hpcue_report.stderr
    rows = {int(r["global_batch_size"]): r for r in
            csv.DictReader((runs / "report" / "report.csv").open())}
    for point, batch in (("digits-b32-s0", 32), ("digits-b64-s0", 64)):
        result = json.loads((runs / "digits-local" / point / "results.json").read_text())
        assert result["world_size"] == 2 and result["launcher"] == "slurm"
        assert float(rows[batch]["clean_test_acc_mean"]) == result["clean_test_acc"]
        assert float(rows[batch]["unlearnable_test_acc_mean"]) == result["unlearnable_test_acc"]
        assert int(rows[batch]["world_size"]) == 2
    md = (runs / "report" / "report.md").read_text()
    assert "| digits | - | 32 | 2 | none | 1 |" in md
    for png in ("accuracy_vs_batch-digits.png", "throughput_vs_world_size.png"):
        assert (runs / "report" / png).stat().st_size > 1000


def test_usr1_requeues_and_the_rerun_resumes(slurm, tmp_path):
    """The rendered script's wall-time path, for real: Slurm's USR1 (sent now, as --signal
    would near the limit) requeues the job, and the requeued job resumes from the checkpoint."""
    import json
    import os
    import time

    import torch
    import yaml

    spec = yaml.safe_load((REPO / "configs" / "sweeps" / "digits-local.yaml").read_text())
    spec.update(name="requeue", global_batch_sizes=[64], seeds=[0], share_clusters=False,
                overrides=[o for o in spec["overrides"] if not o.startswith("train.epochs")]
                + ["train.epochs=20", "victim.seeds=1", "victim.baselines=[]",
                   "victim.defenses=[]"])
    spec_path = tmp_path / "requeue.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    runs, jobs = tmp_path / "runs", tmp_path / "jobs"
    env = _env(PATH=f"{BIN}:{os.environ['PATH']}")
    render = subprocess.run([str(BIN / "hpcue"), "sweep", "render", str(spec_path), "--scheduler",
                             "slurm", "--out", str(jobs), "--runs", str(runs)], cwd=REPO, env=env,
                            capture_output=True, text=True)
    assert render.returncode == 0, render.stderr
    (script,) = jobs.glob("*.sbatch")
    point = runs / "requeue" / "digits-b64-s0"
    assert not runs.exists()  # render writes the scripts only: the log's folder is made by
    point.mkdir(parents=True)  # whoever submits (hpcue sweep submit does)
    out = subprocess.run([slurm, "--parsable", str(script)], cwd=REPO, env=env,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    job = out.stdout.strip().split(";")[0]
    last = point / "checkpoints" / "train" / "last.ckpt"
    deadline = time.monotonic() + 600
    while True:  # past stage 1's first epoch checkpoint
        assert time.monotonic() < deadline, "no stage-1 checkpoint"
        try:
            if last.is_file() and torch.load(last, weights_only=False)["epoch"] >= 1:
                break
        except Exception:  # being written
            pass
        time.sleep(0.5)
    subprocess.run(["scancel", "--signal=USR1", "--batch", job], check=True)
    while not (point / "results.json").is_file():
        assert time.monotonic() < deadline, "the requeued job did not finish"
        time.sleep(2)
    log = (point / f"slurm-{job}.out").read_text()  # --open-mode=append: both attempts
    assert log.count("launcher=slurm world_size=2") == 2, log[-3000:]
    assert "stage cluster: done earlier" in log
    assert f"train: resuming from the epoch checkpoint {last}" in log
    assert "Restoring states from the checkpoint" in (point / "logs" / "lightning.log").read_text()
    results = json.loads((point / "results.json").read_text())
    assert results["world_size"] == 2 and 0 <= results["unlearnable_test_acc"] <= 1


# what each task of a launch found: printed by the same detection `hpcue run` starts with
DETECT = ("from hpcue.distributed.topology import detect; t = detect('auto', 'cpu'); "
          "print(f'found launcher={t.launcher} world_size={t.world_size} rank={t.rank}')")


def _found(cmd: list[str]) -> list[str]:
    proc = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr[-3000:]}"
    # ranks share one stream: two lines can run together, so findings are matched, not split
    return sorted("found " + f for f in re.findall(
        r"found ((?:launcher|name)=[a-z]+?(?: world_size=\d+ rank=\d+)?)(?=found|\s|$)",
        proc.stdout))


@pytest.mark.parametrize(("launch", "name"), [
    (["salloc", "-n", "2", "srun"], "interactive"),  # salloc's own default job name
    (["srun", "-n", "2", "--job-name=bash"], "bash"),
], ids=["salloc-srun", "srun-bash"])
def test_interactive_job_names_run_as_one_world(slurm, launch, name):
    """Lightning refuses Slurm jobs named bash or interactive; every task of the step then ran
    the whole job alone. hpcue counts the step's own tasks."""
    code = DETECT + "; import os; print('found name=' + os.environ['SLURM_JOB_NAME'])"
    assert _found([*launch, str(BIN / "python"), "-c", code]) == [
        "found launcher=slurm world_size=2 rank=0", "found launcher=slurm world_size=2 rank=1",
        f"found name={name}", f"found name={name}"]


def test_one_process_forced_in_a_two_task_step_is_refused(slurm, tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run(["srun", "-n", "2", "--job-name=interactive", str(BIN / "hpcue"),
                           "cluster", "--launcher", "local", "--out", str(out), *DIST],
                          cwd=REPO, env=_env(), capture_output=True, text=True, timeout=900)
    assert proc.returncode != 0
    errors = sorted(line for line in proc.stderr.splitlines() if line.startswith("hpcue: "))
    assert errors == [
        f"hpcue: error: launcher local gives world size 1, but this process is task "
        f"SLURM_PROCID={r} of an srun step of SLURM_STEP_NUM_TASKS=2 tasks: each would run the "
        f"whole job alone. Let hpcue detect Slurm (drop --launcher local / runtime.launcher: "
        f"local), or start one task (srun -n 1)" for r in (0, 1)], proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and not out.exists()


def test_batch_script_shell_and_steps(slurm, tmp_path):
    """The batch script's own shell (SLURM_PROCID=0, SLURM_NTASKS=2, no step) is one process;
    `srun -n 1` in a --ntasks-per-node=2 job is a step of one (its SLURM_NTASKS_PER_NODE is
    the job's 2); mpiexec in the job starts its ranks under a one-task step of its own."""
    log = tmp_path / "job.out"
    script = tmp_path / "job.sbatch"
    py = f"{BIN / 'python'} -c \"{DETECT}\""
    script.write_text("\n".join([
        "#!/bin/bash", "#SBATCH --nodes=1", "#SBATCH --ntasks-per-node=2",
        f"#SBATCH --output={log}", "export OMP_NUM_THREADS=1",
        f"echo shell; {py}", f"echo one; srun -n 1 {py}",
        f"echo mpiexec; {BIN / 'mpiexec'} -n 2 {py}", f"echo all; srun {py}", ""]))
    proc = sbatch_wait(["--chdir", str(REPO), str(script)], _env())
    text = log.read_text()
    assert proc.returncode == 0, f"{proc.stderr}\n{text[-3000:]}"
    # mpiexec's ranks share one output stream, so two ranks' lines can run together on one
    # line: each finding is matched where it stands, not as a whole line
    sections: dict[str, list[str]] = {}
    name = ""
    for line in text.splitlines():
        if line in ("shell", "one", "mpiexec", "all"):
            name = line
        for found in re.findall(r"found (launcher=\w+ world_size=\d+ rank=\d+)", line):
            sections.setdefault(name, []).append(found)
    assert {k: sorted(v) for k, v in sections.items()} == {
        "shell": ["launcher=local world_size=1 rank=0"],
        "one": ["launcher=slurm world_size=1 rank=0"],
        "mpiexec": ["launcher=mpi world_size=2 rank=0", "launcher=mpi world_size=2 rank=1"],
        "all": ["launcher=slurm world_size=2 rank=0", "launcher=slurm world_size=2 rank=1"],
    }, text[-3000:]
