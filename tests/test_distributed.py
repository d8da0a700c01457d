"""Real launchers: mpiexec (MPICH wheel), torchrun, and jsrun's exact environment, emulated.

Each runs ``hpcue run`` at tiny sizes with 2 ranks and is checked against one process: the same
clusters, nearly the same perturbations, accuracies within tolerance (batch norm is per rank on
CPU). A mismatched world size fails fast, and a killed rank ends the job.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO, hpcue, tiny_sets

BIN = Path(sys.executable).parent
# 3 shards for 2 ranks: the strided split, whose global batches equal one process's batches.
# No augmentation: its draws are keyed by rank, so 2 ranks crop otherwise than 1 process; these
# tests compare what only the order of float sums may change.
DIST = tiny_sets(["data.num_shards=3", "runtime.timeout_s=60", "data.augment=none"])


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SLURM_", "PMI_", "OMPI_", "JSM_", "LSB_", "MPI_LOCAL"))
           and k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK",
                         "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID")}
    return {**env, "OMP_NUM_THREADS": "1", **extra}


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    out = tmp_path_factory.mktemp("single") / "run"
    hpcue("run", "--out", str(out), *DIST)
    return out


def assert_matches_one_process(out: Path, single: Path, launcher: str) -> None:
    results = json.loads((out / "results.json").read_text())
    ref = json.loads((single / "results.json").read_text())
    assert results["world_size"] == 2 and results["launcher"] == launcher
    assert results["stage1_batch"]["per_rank_batch_size"] == 32
    a = torch.load(single / "clusters.pt", weights_only=True)
    b = torch.load(out / "clusters.pt", weights_only=True)
    assert torch.equal(a["assignments"], b["assignments"])
    torch.testing.assert_close(a["centers"], b["centers"], atol=1e-5, rtol=1e-5)
    assert results["cluster_purity"] == ref["cluster_purity"]
    da = torch.load(single / "perturbations.pt", weights_only=True)["deltas"]
    db = torch.load(out / "perturbations.pt", weights_only=True)["deltas"]
    close = ((da - db).abs() <= 2 / 255).float().mean()
    assert close > 0.95, f"only {close:.3f} of perturbation pixels agree within 2/255"
    for key in ("clean_test_acc", "unlearnable_test_acc"):
        assert abs(results[key] - ref[key]) < 0.1, (key, results[key], ref[key])
    assert (out / "unlearnable" / "meta.json").is_file()
    from hpcue.data.verify import verify

    assert verify(out / "unlearnable") == {"train": 1347}


def _run(cmd: list[str], env: dict, timeout: float = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, f"{cmd[:3]} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def test_mpiexec(one_process, tmp_path):
    out = tmp_path / "run"
    proc = _run([str(BIN / "mpiexec"), "-n", "2", str(BIN / "hpcue"), "run", "--out", str(out),
                 *DIST], _env())
    assert "launcher=mpi world_size=2 nodes=1 ranks_per_node=2 backend=gloo" in proc.stdout
    assert_matches_one_process(out, one_process, "mpi")


def test_torchrun(one_process, tmp_path):
    out = tmp_path / "run"
    proc = _run([str(BIN / "torchrun"), "--nproc-per-node", "2", "--master-port",
                 str(_free_port()), "-m", "hpcue.cli", "run", "--out", str(out), *DIST], _env())
    assert "launcher=torchrun world_size=2 nodes=1 ranks_per_node=2" in proc.stdout
    assert_matches_one_process(out, one_process, "torchrun")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def jsrun_env(rank: int, size: int, rankfile: Path, jobid: int, hosts_ranks: int = 2) -> dict:
    """Exactly the variables jsrun sets for one task (LSF on Summit)."""
    return _env(
        LSB_JOBID=str(jobid), LSB_DJOB_RANKFILE=str(rankfile), LSB_JOBNAME="hpcue",
        JSM_NAMESPACE_RANK=str(rank), JSM_NAMESPACE_LOCAL_RANK=str(rank % hosts_ranks),
        JSM_NAMESPACE_SIZE=str(size), JSM_NAMESPACE_LOCAL_SIZE=str(hosts_ranks),
        OMPI_COMM_WORLD_RANK=str(rank), OMPI_COMM_WORLD_SIZE=str(size),
        OMPI_COMM_WORLD_LOCAL_RANK=str(rank % hosts_ranks),
        OMPI_COMM_WORLD_LOCAL_SIZE=str(hosts_ranks),
    )


def _rankfile(tmp_path: Path, hosts: list[str]) -> Path:
    """LSF's rank file: the launch (batch) node first, then one line per compute slot."""
    path = tmp_path / "rankfile"
    path.write_text("\n".join(["batch1", *hosts]) + "\n")
    return path


def _jsrun(args: list[str], size: int, rankfile: Path, jobid: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([str(BIN / "hpcue"), *args], cwd=REPO,
                             env=jsrun_env(r, size, rankfile, jobid), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
            for r in range(size)]


def test_jsrun_emulated(one_process, tmp_path):
    host = socket.gethostname()
    rankfile = _rankfile(tmp_path, [host, host])
    out = tmp_path / "run"
    procs = _jsrun(["run", "--out", str(out), *DIST], 2, rankfile, random.randint(1000, 90000))
    outputs = [p.communicate(timeout=600) for p in procs]
    for p, (_, se) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, se[-3000:]
    assert "launcher=lsf world_size=2 nodes=1 ranks_per_node=2" in outputs[0][0]
    assert_matches_one_process(out, one_process, "lsf")


def test_jsrun_mismatch_fails_before_any_collective(tmp_path):
    host = socket.gethostname()
    rankfile = _rankfile(tmp_path, [host, "other-node"])  # 2 hosts, 3 ranks
    out = tmp_path / "run"
    t0 = time.monotonic()
    procs = _jsrun(["run", "--out", str(out), *DIST], 3, rankfile, random.randint(1000, 90000))
    outputs = [p.communicate(timeout=120) for p in procs]
    assert time.monotonic() - t0 < 60
    for p, (_, se) in zip(procs, outputs, strict=True):
        assert p.returncode == 2
        assert "JSM_NAMESPACE_SIZE=3 ranks do not divide over the 2 hosts" in se
    assert not out.exists()


def test_killed_rank_ends_the_job(tmp_path):
    host = socket.gethostname()
    rankfile = _rankfile(tmp_path, [host, host])
    out = tmp_path / "run"
    args = ["run", "--out", str(out), *tiny_sets(["data.num_shards=3", "runtime.timeout_s=30",
                                                   "train.epochs=200"])]
    procs = _jsrun(args, 2, rankfile, random.randint(1000, 90000))
    deadline = time.monotonic() + 300
    while not (out / "clusters.pt").exists():  # stage 1 (training) has started
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs)
        time.sleep(0.5)
    time.sleep(3)
    procs[1].send_signal(signal.SIGKILL)
    t0 = time.monotonic()
    _, err = procs[0].communicate(timeout=240)
    assert procs[0].returncode != 0
    assert time.monotonic() - t0 < 120  # bounded by runtime.timeout_s, not a hang
    assert not (out / "perturbations.pt").exists() and not (out / "results.json").exists()


def test_lsf_script_jsrun_line_runs_under_emulated_jsrun(tmp_path, monkeypatch):
    """Render an LSF script for a 2-rank profile and run its jsrun line with jsrun's variables."""
    import re
    import shlex

    import yaml

    from hpcue.sweep.points import load_sweep
    from hpcue.sweep.render import render_point

    machines = tmp_path / "machines"
    machines.mkdir()
    (machines / "minisummit.yaml").write_text(yaml.safe_dump({
        "name": "minisummit", "scheduler": "lsf", "gpus_per_node": 0, "cores_per_node": 2,
        "ranks_per_node": 2, "launch": "jsrun -n{world_size} -r{ranks_per_node} -a1 -c1",
        "account_required": True, "queue": "debug"}))
    spec = yaml.safe_load((REPO / "configs" / "sweeps" / "digits-local.yaml").read_text())
    spec.update(name="mini", machine="minisummit", account="ABC", global_batch_sizes=[64])
    spec["overrides"] = spec["overrides"] + ["runtime.timeout_s=60"]
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    monkeypatch.chdir(REPO)
    sweep = load_sweep(tmp_path / "spec.yaml", machines)
    script = render_point(sweep, sweep.points[0], "lsf", tmp_path / "runs")
    line = next(x for x in script.splitlines() if x.startswith("jsrun "))
    words = shlex.split(line.removesuffix(" &"))
    n, r = (int(re.search(rf"-{f}(\d+)", line).group(1)) for f in ("n", "r"))
    assert (n, r) == (2, 2) and words[words.index("hpcue") + 1] == "run"
    args = words[words.index("hpcue") + 1:]
    rankfile = _rankfile(tmp_path, [socket.gethostname()] * r)
    procs = _jsrun(args, n, rankfile, random.randint(1000, 90000))
    outputs = [p.communicate(timeout=600) for p in procs]
    for p, (_, se) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, se[-3000:]
    assert "launcher=lsf world_size=2 nodes=1 ranks_per_node=2" in outputs[0][0]
    results = json.loads((tmp_path / "runs" / "mini" / sweep.points[0].name /
                          "results.json").read_text())
    assert results["world_size"] == 2 and results["global_batch_size"] == 64


def test_rank0_setup_failure_reaches_every_rank(tmp_path):
    # rank 0 alone prepares the data; its error must end the other rank too, clearly and at once
    out = tmp_path / "run"
    missing = tmp_path / "no-such-folder"
    proc = subprocess.run(
        [str(BIN / "mpiexec"), "-n", "2", str(BIN / "hpcue"), "run", "--out", str(out), *DIST,
         "--set", "data.dataset=imagefolder", "--set", f"data.root={missing}"],
        cwd=REPO, env=_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert f"hpcue: error: {missing}: image folder not found" in proc.stderr
    assert (f"hpcue: error: rank 0 failed while preparing imagefolder into {out / 'data'}: "
            f"{missing}: image folder not found") in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists()


def test_damaged_shard_on_one_rank_ends_every_rank(one_process, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(one_process, run)
    for gone in ("unlearnable", "preview.png", "results.json", "stages/generate.json",
                 "stages/evaluate.json"):
        path = run / gone
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    damaged = run / "data" / "train-00001-of-00003.h5"  # rank 1 opens and reads shard 1
    damaged.write_bytes(damaged.read_bytes()[:4000])
    proc = subprocess.run([str(BIN / "mpiexec"), "-n", "2", str(BIN / "hpcue"), "generate",
                           "--out", str(run)], cwd=REPO, env=_env(), capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode != 0
    assert f"hpcue: error: {damaged}: not a readable HDF5 shard" in proc.stderr
    assert (f"hpcue: error: rank 1 failed while opening the shards in {run / 'data'}: "
            f"{damaged}: not a readable HDF5 shard") in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (run / "unlearnable").exists() and not (run / "unlearnable.partial").exists()
