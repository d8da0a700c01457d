"""Sweep specs, job scripts (golden files, bash -n), bad input, and the report of nothing
(the report itself: tests/test_report.py)."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from hpcue.config import ConfigError
from hpcue.sweep.machines import MachineProfile
from hpcue.sweep.points import Sweep, effective_settings, load_sweep
from hpcue.sweep.render import cluster_jobs, render, render_cluster_job, render_point
from hpcue.sweep.shipped import configs_dir, machines_dir, sweeps_dir
from hpcue.sweep.spec import parse_walltime
from hpcue.sweep.submit import claim_sweep_dir, status, submit
from tests.conftest import ACCOUNT, REPO, hpcue, shipped_account

GOLDEN = REPO / "tests" / "golden"
SWEEPS = REPO / "configs" / "sweeps"


def _shipped(spec: str, machines: Path | None = None) -> Sweep:
    """A shipped spec, given ``ACCOUNT`` where its machine needs one (the specs name none)."""
    return load_sweep(SWEEPS / spec, machines, shipped_account(spec))


@pytest.fixture(autouse=True)
def _repo_cwd(monkeypatch):
    # scripts name paths under the current directory relative to it: the goldens' configs/...
    monkeypatch.chdir(REPO)


@pytest.mark.parametrize("spec,index,scheduler,golden", [
    ("digits-local.yaml", 0, "slurm", "digits-local-digits-b16-s0.sbatch"),
    ("paper-summit.yaml", 0, "lsf", "paper-summit-first.bsub"),
    ("paper-frontier.yaml", -1, "slurm", "paper-frontier-last.sbatch"),
])
def test_rendered_scripts_match_reviewed_golden_files(spec, index, scheduler, golden):
    sweep = _shipped(spec)
    assert render_point(sweep, sweep.points[index], scheduler) == (GOLDEN / golden).read_text()


@pytest.mark.parametrize("spec", sorted(p.name for p in SWEEPS.glob("*.yaml")))
def test_no_two_points_of_a_shipped_sweep_run_the_same_settings(spec):
    points = _shipped(spec).points
    assert len({effective_settings(p) for p in points}) == len(points)


def test_a_point_that_repeats_another_is_dropped_and_named():
    sweep = _shipped("paper-frontier.yaml")
    names = {p.name for p in sweep.points}
    # at the base batch (256) sqrt scaling is no scaling: the same run as none
    assert (sweep.same_as["medmnist-pathmnist-b256-s0-adamw-lrsqrt"]
            == "medmnist-pathmnist-b256-s0-adamw-lrnone")
    datasets = ("medmnist-pathmnist", "medmnist-bloodmnist", "medmnist-organamnist",
                "oxford-iiit-pet")
    assert set(sweep.same_as) == {f"{d}-b256-s{s}-adamw-lrsqrt" for d in datasets
                                  for s in (0, 1, 2)}
    # 4 data sets x 5 batches x 3 seeds x 2 rules, and the warmup line's 2 batches
    assert not names & set(sweep.same_as) and len(names) == 4 * 3 * 2 * (5 + 2) - 12


def test_sqrt_and_none_points_get_different_learning_rates():
    points = {p.name: p for p in _shipped("paper-frontier.yaml").points}
    from hpcue.stages.plans import batch_plan

    for batch, factor in ((64, 0.5), (1024, 2.0)):
        name = f"medmnist-pathmnist-b{batch}-s0-adamw-lr"
        none, sqrt = (batch_plan(points[f"{name}{rule}"].run_config, "train", 16)
                      for rule in ("none", "sqrt"))
        assert (none.lr_scaling, sqrt.lr_scaling) == ("none", "sqrt")
        assert sqrt.effective_lr == pytest.approx(none.effective_lr * factor)


@pytest.mark.parametrize("spec,scheduler,count", [
    ("digits-local.yaml", "slurm", 9 + 1), ("digits-batch-study.yaml", "slurm", 48 + 1),
    ("digits-attacks.yaml", "slurm", 18 + 1),
    ("paper-summit.yaml", "lsf", 96 + 4), ("paper-frontier.yaml", "slurm", 156 + 4),
    ("paper-summit-flowers102.yaml", "lsf", 21 + 1),
    ("paper-frontier-flowers102.yaml", "slurm", 30 + 1),
])  # points + one clusters job per cluster config
def test_every_rendered_script_passes_bash_n(spec, scheduler, count, tmp_path):
    sweep = _shipped(spec)
    paths = render(sweep, scheduler, tmp_path, tmp_path / "runs")
    assert len(paths) == count
    # a preview: the scripts and nothing else, no run directory (submit makes each, for its log)
    assert not (tmp_path / "runs").exists()
    assert sorted(tmp_path.iterdir()) == sorted(paths)
    for path in paths:
        proc = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
        assert proc.returncode == 0, f"{path}: {proc.stderr}"


def test_the_clusters_job_matches_its_reviewed_golden_file():
    sweep = load_sweep(SWEEPS / "digits-local.yaml")
    (digest,) = cluster_jobs(sweep)
    text = render_cluster_job(sweep, digest, "slurm")
    assert text == (GOLDEN / "digits-local-clusters.sbatch").read_text()
    assert f"hpcue cluster --config configs/debug-digits.yaml --out runs/digits-local/" \
           f"cluster-jobs/{digest}" in text


def test_render_writes_the_scripts_only_and_no_run_directory(tmp_path):
    """A preview: rendering paper-frontier once made its points' run directories and its
    clusters-job ones under --runs (or ./runs)."""
    runs, out = tmp_path / "runs", tmp_path / "out"
    proc = hpcue("sweep", "render", "paper-frontier", "--account", ACCOUNT, "--out", str(out),
                 "--runs", str(runs), cwd=tmp_path)
    assert "[hpcue] rendered 160 slurm scripts into" in proc.stdout
    assert "`hpcue sweep submit` submits them and creates the run directories" in proc.stdout
    assert not runs.exists() and sorted(tmp_path.iterdir()) == [out]
    scripts = sorted(out.iterdir())
    assert len(scripts) == 160 and all(p.suffix == ".sbatch" for p in scripts)
    assert f"#SBATCH --output={runs}/paper-frontier/" in scripts[-1].read_text()
    hpcue("sweep", "render", "digits-local", "--out", "default", cwd=tmp_path)
    assert not runs.exists()  # nor under the default --runs, ./runs


def test_submit_makes_the_log_folder_of_each_job_it_submits(tmp_path, monkeypatch):
    """Slurm and LSF fail a job whose log folder is missing: render makes none, submit makes
    each (the clusters job's too) before the job is submitted."""
    state, _ = _fake_lsf(tmp_path, monkeypatch)
    sweep = load_sweep(_spec(tmp_path, machine="summit", account=ACCOUNT,
                             global_batch_sizes=[32, 64], seeds=[0], ranks_per_node=2))
    runs = tmp_path / "runs"
    render(sweep, None, tmp_path / "preview", runs)
    assert not runs.exists()
    assert len(submit(sweep, runs)) == 3
    scripts = sorted(state.glob("*.bsub"))
    logs = [re.search(r"^#BSUB -o (\S+)/lsf-%J\.out$", p.read_text(), re.MULTILINE).group(1)
            for p in scripts]
    (digest,) = cluster_jobs(sweep)
    root = runs / sweep.spec.name
    assert sorted(logs) == sorted(str(d) for d in [root / "cluster-jobs" / digest,
                                                   *(root / p.name for p in sweep.points)])
    assert all(Path(log).is_dir() for log in logs)


def test_the_clusters_job_asks_for_one_rank_on_one_node_and_less_time(tmp_path):
    """The cluster stage runs at any world size and one device does it in minutes: a clusters
    job sized as a point (paper-frontier: 2 nodes x 8 GCDs for 2 h) only waits longer."""
    sweep = _shipped("paper-frontier.yaml")
    text = render_cluster_job(sweep, next(iter(cluster_jobs(sweep))), "slurm")
    for line in ("#SBATCH --nodes=1\n", "#SBATCH --ntasks-per-node=1\n",
                 "#SBATCH --gpus-per-node=1\n", "#SBATCH --cpus-per-task=7\n",
                 "#SBATCH --time=01:00:00\n",
                 "\nsrun --gpus-per-task=1 --gpu-bind=closest hpcue cluster --config "):
        assert line in text, line
    point = render_point(sweep, sweep.points[0], "slurm")  # the points as they were
    for line in ("#SBATCH --nodes=2\n", "#SBATCH --ntasks-per-node=8\n",
                 "#SBATCH --gpus-per-node=8\n", "#SBATCH --time=02:00:00\n"):
        assert line in point, line
    summit = _shipped("paper-summit.yaml")
    lsf = render_cluster_job(summit, next(iter(cluster_jobs(summit))), "lsf")
    assert "#BSUB -nnodes 1\n" in lsf and "#BSUB -W 01:00\n" in lsf
    assert '\njsrun -n1 -r1 -a1 -g1 -c7 -bpacked:7 --smpiargs="off" hpcue cluster ' in lsf
    # the spec's own cluster wall time; without one, a point's shorter wall time (digits-local:
    # 20 min, its golden) is kept
    mine = load_sweep(_spec(tmp_path, cluster_walltime="00:05:00"))
    (digest,) = cluster_jobs(mine)
    assert "#SBATCH --time=00:05:00\n" in render_cluster_job(mine, digest, "slurm")
    assert "#SBATCH --time=00:20:00\n" in render_point(mine, mine.points[0], "slurm")


def test_seeds_share_clusters_when_the_cluster_seed_is_fixed():
    sweep = load_sweep(SWEEPS / "digits-local.yaml")
    spec = sweep.spec.model_copy(update={"seeds": [0, 1, 2]})
    from hpcue.sweep.points import Point, Sweep

    points = [Point(f"s{s}", p.config, p.overrides, 1, 1,
                    p.run_config.model_copy(update={"seed": s})) for p in sweep.points
              for s in (0, 1, 2)]
    assert len(cluster_jobs(Sweep(spec, sweep.machine, points, sweep.source))) == 1
    unfixed = [Point(p.name, p.config, p.overrides, 1, 1, p.run_config.model_copy(update={
        "cluster": p.run_config.cluster.model_copy(update={"seed": None})})) for p in points]
    assert len(cluster_jobs(Sweep(spec, sweep.machine, unfixed, sweep.source))) == 3


def test_local_sweep_clusters_once_and_every_point_holds_the_same_clusters(tmp_path):
    import torch

    runs = tmp_path / "runs"
    spec = _spec(tmp_path, global_batch_sizes=[16, 32, 64], seeds=[0])
    proc = hpcue("sweep", "local", str(spec), "--runs", str(runs))
    sweep = load_sweep(spec)
    records = {p.name: json.loads((runs / "digits-local" / p.name / "stages" / "cluster.json")
                                  .read_text()) for p in sweep.points}
    reused = [name for name, r in records.items() if "reused_from" in r]
    assert len(reused) == 2 and len(records) == 3, proc.stdout  # computed once, then reused
    (shared,) = (runs / "digits-local" / "clusters").iterdir()
    assert {records[n]["reused_from"] for n in reused} == {str(shared)}
    first = torch.load(shared / "clusters.pt", weights_only=True)["assignments"]
    for name in records:
        here = torch.load(runs / "digits-local" / name / "clusters.pt", weights_only=True)
        assert torch.equal(here["assignments"], first), name
    purities = {r["cluster_purity"] for r in records.values()}
    assert len(purities) == 1


def test_summit_jsrun_line_and_lsf_directives():
    sweep = _shipped("paper-summit.yaml")
    text = render_point(sweep, sweep.points[0], "lsf")
    assert 'jsrun -n12 -r6 -a1 -g1 -c7 -bpacked:7 --smpiargs="off" hpcue run' in text
    for directive in (f"#BSUB -P {ACCOUNT}", "#BSUB -W 02:00", "#BSUB -nnodes 2", "#BSUB -q batch",
                      "#BSUB -J paper-summit-", "#BSUB -o ", "#BSUB -e ", "#BSUB -wa URG"):
        assert directive in text


def _spec(tmp_path, **changes) -> Path:
    data = yaml.safe_load((SWEEPS / "digits-local.yaml").read_text())
    data.update(changes)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_every_point_whose_batch_exceeds_the_training_set_is_listed(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_sweep(_spec(tmp_path, global_batch_sizes=[32, 2048, 4096]))
    text = str(err.value)
    assert "larger than the training set" in text and "(world size 2)" in text
    assert "digits-b2048-s0: train.global_batch_size=2048 > 1347 training images" in text
    assert "digits-b4096-s0: train.global_batch_size=4096 > 1347 training images" in text
    assert "b32" not in text
    # prepared shards: their meta.json says how many training images there are
    from hpcue.data.prepare import PrepareOptions, prepare

    shards = prepare("digits", None, tmp_path / "shards",
                     PrepareOptions(image_size=8, shards=1, test_fraction=0.9))
    spec = _spec(tmp_path, global_batch_sizes=[32, 256],
                 overrides=[f"data.shards={shards}", "data.image_size=8",
                            "victim.global_batch_size=512"])
    with pytest.raises(ConfigError, match=r"digits-b256-s0: train.global_batch_size=256 > 179 "
                                          r"training images\n  digits-b256-s0: victim"
                                          r".global_batch_size=512 > 179"):
        load_sweep(spec)


def test_an_official_split_caps_the_batch_before_anything_is_prepared(tmp_path):
    data = yaml.safe_load((SWEEPS / "paper-summit-flowers102.yaml").read_text())
    data.update(global_batch_sizes=[768, 1536], account=ACCOUNT)
    path = tmp_path / "flowers.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="flowers102-b1536-s0-adamw-lrsqrt: "
                                          "train.global_batch_size=1536 > 1020 training images"):
        load_sweep(path)


def test_the_machines_micro_batch_reaches_every_point_unless_the_spec_sets_one(tmp_path):
    assert {p.run_config.runtime.max_micro_batch
            for p in _shipped("paper-summit.yaml").points} == {32}
    assert {p.run_config.runtime.max_micro_batch
            for p in _shipped("paper-frontier.yaml").points} == {"auto"}
    data = yaml.safe_load((SWEEPS / "paper-summit.yaml").read_text())
    data["overrides"].append("runtime.max_micro_batch=16")
    data["account"] = ACCOUNT
    path = tmp_path / "summit.yaml"
    path.write_text(yaml.safe_dump(data))
    points = load_sweep(path).points
    assert {p.run_config.runtime.max_micro_batch for p in points} == {16}
    # batch 1536 on 12 ranks: 128 a rank, 16 a device, 8 micro-batches accumulated
    from hpcue.stages.plans import batch_plan

    big = next(p for p in points if p.name.startswith("medmnist-pathmnist-b1536-s0"))
    assert batch_plan(big.run_config, "train", 12).accumulate_grad_batches == 8


def test_walltime_per_config_with_a_default(tmp_path):
    spec = _spec(tmp_path, walltime={"debug-digits": "00:45:00", "default": "00:10:00"})
    sweep = load_sweep(spec)
    assert {p.walltime_minutes for p in sweep.points} == {45}
    assert "#SBATCH --time=00:45:00" in render_point(sweep, sweep.points[0], "slurm")
    assert load_sweep(_spec(tmp_path, walltime={"default": "00:10:00"})).points[0] \
        .walltime_minutes == 10


def test_a_point_whose_epoch_cannot_fit_its_wall_time_is_refused(tmp_path):
    # 1347 digits at 5 images/s: 4.5 min an epoch, within 20 min less Slurm's 2 min warning
    assert load_sweep(_spec(tmp_path, images_per_second={"default": 5.0})).points
    with pytest.raises(ConfigError) as err:
        load_sweep(_spec(tmp_path, images_per_second={"debug-digits": 1.0}))
    text = str(err.value)
    assert "would requeue forever" in text
    for point in ("digits-b32-s0", "digits-b64-s0"):
        assert (f"{point}: 1347 images at 1 images/s is 22.4 min an epoch, more than the 18 min "
                f"of its 20 min wall time") in text


@pytest.mark.parametrize("changes,message", [
    ({"machine": "cray-xyz"}, "unknown machine profile 'cray-xyz'"),
    ({"global_batch_sizes": [33]}, "train global batch 33 is not divisible by the world size 2"),
    ({"walltime": "90 minutes"}, "malformed walltime '90 minutes'"),
    ({"walltime": "01:75:00"}, "malformed walltime '01:75:00'"),
    ({"cluster_walltime": "soon"}, "cluster_walltime: malformed walltime 'soon'"),
    ({"machine": "summit"}, "machine 'summit' needs an account"),
    ({"colour": "red"}, "colour: unknown key"),
    ({"overrides": ["train.bogus=1"]}, "train.bogus: unknown key"),
    ({"walltime": {"configs/other.yaml": "01:00:00"}},
     "walltime: configs/other.yaml is not one of the configs (debug-digits)"),
    ({"walltime": {"debug-digits": "1 hour"}}, "malformed walltime '1 hour'"),
    ({"images_per_second": {"elsewhere": 3.0}}, "images_per_second: elsewhere is not one of"),
    ({"configs": ["debug-digits", "paper-pathmnist"], "walltime": {"debug-digits": "01:00:00"}},
     "walltime: no wall time for paper-pathmnist (add it, or a 'default')"),
    ({"configs": ["no-such-config"]}, "configs: 'no-such-config' is not a shipped config "
                                      "(shipped: cpu-imagefolder, debug-digits, "
                                      "digits-full-protocol, example-imagefolder, "
                                      "paper-bloodmnist"),
    ({"configs": ["mine.yaml"]}, "config file not found: "),
    # the study's keys: a reading without its steps, steps without the reading, a variant
    # setting what an axis sets (it would be overwritten without a word), a bad variant name
    ({"training": "steps"}, "training: steps needs steps: N"),
    ({"steps": 100}, "steps: 100 is the other reading"),
    ({"overrides": ["train.steps=100"]}, "overrides: train.steps is set for every point"),
    ({"lr_scaling": ["none", "sqrt"],
      "variants": {"a": {"overrides": ["train.lr_scaling=sqrt", "train.base_batch_size=64"]}}},
     "variants.a.overrides: train.lr_scaling is set for every point by the spec (lr_scaling)"),
    ({"variants": {"a": {"overrides": ["seed=3"]}}}, "variants.a.overrides: seed is set"),
    ({"variants": {"no/slash": {}}}, "'no/slash' is not a plain name"),
    ({"variants": {}}, "an empty mapping"),
    ({"variants": {"a": {"overrides": ["train.optimizer=sgd"]}}}, "train.optimizer"),
])
def test_bad_specs(tmp_path, changes, message):
    with pytest.raises(ConfigError) as err:
        load_sweep(_spec(tmp_path, **changes))
    assert message in str(err.value)


def test_unknown_or_mismatched_scheduler(tmp_path):
    sweep = load_sweep(SWEEPS / "digits-local.yaml")
    with pytest.raises(ConfigError, match="unknown scheduler 'pbs'"):
        render(sweep, "pbs", tmp_path / "a")
    with pytest.raises(ConfigError, match="machine profile 'local' uses slurm, not lsf"):
        render(sweep, "lsf", tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    proc = hpcue("sweep", "render", str(SWEEPS / "digits-local.yaml"), "--scheduler", "pbs",
                 "--out", str(tmp_path / "c"), check=False)
    assert proc.returncode == 2 and "unknown scheduler 'pbs'" in proc.stderr


def test_walltime_parsing():
    assert parse_walltime("02:00") == 120 and parse_walltime("00:20:00") == 20
    assert parse_walltime("1-00:00:30") == 1441


def test_sweep_dir_of_another_spec_is_refused_before_submitting(tmp_path):
    runs = tmp_path / "runs"
    claim_sweep_dir(load_sweep(SWEEPS / "digits-local.yaml"), runs)
    other = load_sweep(_spec(tmp_path, global_batch_sizes=[16, 64]))
    with pytest.raises(ConfigError, match="was written for another sweep"):
        submit(other, runs)
    assert not (runs / "digits-local" / "submitted.json").exists()


def test_report_of_nothing_is_an_error(tmp_path):
    proc = hpcue("report", str(tmp_path), check=False)
    assert proc.returncode == 2 and "no results.json found" in proc.stderr
    assert not (tmp_path / "report").exists()


@pytest.mark.parametrize("launch", ["srun -n {}", "jsrun -n{gpus}", "srun {nodes",
                                    "srun -N {nodes[0]}", "srun {world_size.x}"])
def test_launch_line_with_unknown_placeholder_is_refused(launch):
    data = yaml.safe_load((REPO / "configs" / "machines" / "local.yaml").read_text())
    with pytest.raises(ValueError, match="may only use {world_size}, {ranks_per_node}, {nodes}, "
                                         "{cpus_per_task}"):
        MachineProfile(**{**data, "launch": launch})


LSF_BSUB = """#!/bin/bash
# bsub as LSF's: the job script on standard input, "Job <id> is submitted to queue <q>."
id=$((4200 + $(ls "$LSF_STATE"/*.bsub 2>/dev/null | wc -l)))
cat > "$LSF_STATE/$id.bsub"
echo "$@" > "$LSF_STATE/$id.args"
echo "Job <$id> is submitted to queue <batch>."
"""
LSF_BJOBS = """#!/bin/bash
# bjobs -noheader -o jobid as LSF's: one id a line, or the line below and exit 255 when empty
ids=$(cat "$LSF_QUEUE" 2>/dev/null)
if [ -z "$ids" ]; then echo "No unfinished job found" >&2; exit 255; fi
echo "$ids"
"""


def _fake_lsf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """LSF's bsub and bjobs first on PATH; returns the folder of submitted scripts and the file
    that lists the queue."""
    bin_dir, state = tmp_path / "bin", tmp_path / "state"
    bin_dir.mkdir()
    state.mkdir()
    for name, text in (("bsub", LSF_BSUB), ("bjobs", LSF_BJOBS)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    queue = tmp_path / "queue"
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("LSF_STATE", str(state))
    monkeypatch.setenv("LSF_QUEUE", str(queue))
    return state, queue


def test_lsf_submit_reads_job_ids_and_skips_queued_points(tmp_path, monkeypatch):
    """LSF cannot be installed here: bsub and bjobs reproduce LSF's exact output and exits."""
    state, queue = _fake_lsf(tmp_path, monkeypatch)
    sweep = load_sweep(_spec(tmp_path, machine="summit", account=ACCOUNT,
                             global_batch_sizes=[32, 64], seeds=[0], ranks_per_node=2))
    runs = tmp_path / "runs"
    jobs = submit(sweep, runs)  # empty queue: bjobs says so and exits 255
    (digest,) = cluster_jobs(sweep)
    # the clusters job first; each point waits for it, and ends if it fails
    assert jobs == {f"clusters-{digest}": "4200", "digits-b32-s0": "4201",
                    "digits-b64-s0": "4202"}
    assert "hpcue cluster" in (state / "4200.bsub").read_text()
    assert (state / "4200.args").read_text().strip() == ""
    for job in ("4201", "4202"):
        text = (state / f"{job}.bsub").read_text()
        assert f"#BSUB -P {ACCOUNT}" in text and "jsrun" in text and "hpcue run" in text
        assert (state / f"{job}.args").read_text().split() == ["-w", "done(4200)", "-ti"]
    queue.write_text("4200\n4202\n")  # the clusters job and the second point still pending
    again = submit(sweep, runs)
    assert again == {"digits-b32-s0": "4203"} and len(list(state.glob("*.bsub"))) == 4
    assert (state / "4203.args").read_text().split() == ["-w", "done(4200)", "-ti"]
    record = json.loads((runs / sweep.spec.name / "submitted.json").read_text())
    assert record == {f"clusters-{digest}": ["4200"], "digits-b32-s0": ["4201", "4203"],
                      "digits-b64-s0": ["4202"]}
    states = status(sweep, runs)
    assert states["digits-b64-s0"] == "queued or running (job 4202)"
    assert states[f"clusters-{digest}"] == "queued or running (job 4200)"


def test_every_shipped_spec_is_rendered_by_the_bash_n_test():
    (mark,) = [m for m in test_every_rendered_script_passes_bash_n.pytestmark
               if m.name == "parametrize"]
    assert {values[0] for values in mark.args[1]} == {p.name for p in SWEEPS.glob("*.yaml")}


# -- machine profiles that match the machines -------------------------------------------------

#: every shipped profile, with what a spec of it needs (an account where the profile asks one)
PROFILES = sorted(p.stem for p in machines_dir().glob("*.yaml"))


def _profile_spec(tmp_path: Path, machine: str, **changes) -> Path:
    """The digits spec on ``machine``: one point, an account, 2 ranks a node (any machine)."""
    return _spec(tmp_path, machine=machine, account=ACCOUNT, global_batch_sizes=[32], seeds=[0],
                 ranks_per_node=2, **changes)


def _rendered(tmp_path: Path, machine: str, **changes) -> str:
    sweep = load_sweep(_profile_spec(tmp_path, machine, **changes))
    return render_point(sweep, sweep.points[0], sweep.machine.scheduler, tmp_path / "runs")


def test_frontier_script_gives_srun_its_cores_miopen_a_node_local_cache_and_rccl_slingshot():
    text = (GOLDEN / "paper-frontier-last.sbatch").read_text()
    for line in ("#SBATCH --cpus-per-task=7\n", "export SRUN_CPUS_PER_TASK=7\n",
                 "export NCCL_SOCKET_IFNAME=hsn0\n",
                 "export MIOPEN_USER_DB_PATH=/tmp/$USER-miopen-$SLURM_JOB_ID\n",
                 "export MIOPEN_CUSTOM_CACHE_DIR=$MIOPEN_USER_DB_PATH\n",
                 'mkdir -p "$MIOPEN_USER_DB_PATH"\n',
                 "export LD_LIBRARY_PATH=$HOME/aws-ofi-rccl/lib:$LD_LIBRARY_PATH\n",
                 "srun --gpus-per-task=1 --gpu-bind=closest hpcue run "):
        assert line in text, line
    assert re.search(r"^module load rocm/\d+\.\d+\.\d+$", text, re.MULTILINE)  # a versioned ROCm
    assert "--set runtime.precision=bf16-mixed" in text
    # the golden is what the shipped profile renders today
    sweep = _shipped("paper-frontier.yaml")
    assert render_point(sweep, sweep.points[-1], "slurm") == text


def test_generic_slurm_gpu_script_gives_srun_its_cores(tmp_path):
    text = _rendered(tmp_path, "slurm-gpu")
    assert "#SBATCH --cpus-per-task=8\n" in text and "\nexport SRUN_CPUS_PER_TASK=8\n" in text
    assert "\nsrun hpcue run " in text and "--set runtime.precision=bf16-mixed" in text
    assert "#SBATCH --mem=0\n" in text  # its nodes' memory, not the site's per-core default


def test_a_profiles_memory_is_what_slurm_takes(tmp_path):
    data = yaml.safe_load((machines_dir() / "slurm-gpu.yaml").read_text())
    assert MachineProfile(**{**data, "mem_per_node": "120G"}).mem_per_node == "120G"
    for bad in ("lots", "12 GB", "1.5G", "-1"):
        with pytest.raises(ValueError, match="mem_per_node"):
            MachineProfile(**{**data, "mem_per_node": bad})
    no_mem = MachineProfile(**{k: v for k, v in data.items() if k != "mem_per_node"})
    assert no_mem.mem_per_node is None


@pytest.mark.parametrize("machine,cores,precision", [("summit", 7, "16-mixed"),
                                                      ("lsf-jsrun", 10, "16-mixed")])
def test_lsf_scripts_turn_spectrum_mpi_off_in_jsrun(tmp_path, machine, cores, precision):
    text = _rendered(tmp_path, machine)
    assert (f'\njsrun -n2 -r2 -a1 -g1 -c{cores} -bpacked:{cores} --smpiargs="off" hpcue run '
            in text)
    assert f"--set runtime.precision={precision}" in text


@pytest.mark.parametrize("machine", PROFILES)
def test_strict_mode_starts_after_the_last_setup_line_and_bash_n_passes(tmp_path, machine):
    """Activation scripts (conda's activate.d, modules) often read unset variables."""
    sweep = load_sweep(_profile_spec(tmp_path, machine))
    (path, _) = render(sweep, None, tmp_path / "out", tmp_path / "runs")
    lines = path.read_text().splitlines()
    strict = [i for i, line in enumerate(lines) if line.startswith("set -")]
    assert [lines[i] for i in strict] == ["set -euo pipefail"]
    setup = [lines.index(line) for line in sweep.machine.setup]
    assert setup and max(setup) < strict[0], (setup, strict)
    proc = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_the_profiles_precision_reaches_every_point_unless_the_spec_sets_one(tmp_path):
    assert {p.run_config.runtime.precision for p in _shipped(
        "paper-summit.yaml").points} == {"16-mixed"}
    assert {p.run_config.runtime.precision for p in _shipped(
        "paper-frontier.yaml").points} == {"bf16-mixed"}
    mine = load_sweep(_profile_spec(tmp_path, "frontier", overrides=["runtime.precision=32-true"]))
    assert mine.points[0].run_config.runtime.precision == "32-true"
    local = load_sweep(SWEEPS / "digits-local.yaml").points[0]  # CPUs: the default
    assert local.run_config.runtime.precision == "32-true"
    assert not any("precision" in item for item in local.overrides)


# -- shipped specs, configs and profiles, from any directory ------------------------------------

def test_a_shipped_spec_is_found_by_name_and_its_configs_by_theirs():
    sweep = load_sweep("digits-local")
    assert sweep.source == sweeps_dir() / "digits-local.yaml"
    assert sweep.points[0].config == Path("configs/debug-digits.yaml")  # under the cwd: relative
    with pytest.raises(ConfigError, match=r"sweep spec not found: nope \(not a file, nor a shipped "
                                          r"spec: digits-attacks, digits-batch-study, "
                                          r"digits-local, paper-frontier, "):
        load_sweep("nope")


def test_paths_in_a_spec_are_taken_from_its_folder_not_the_cwd(tmp_path, monkeypatch):
    folder = tmp_path / "specs"
    folder.mkdir()
    (folder / "mine.yaml").write_text((configs_dir() / "debug-digits.yaml").read_text())
    spec = _spec(folder, configs=["mine.yaml"],
                 overrides=["data.shards=shards/digits", "surrogate.weights=~/w.pt",
                            f"data.root={tmp_path}/raw", "data.image_size=16"])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    point = load_sweep(spec).points[0]
    assert point.config == folder / "mine.yaml"
    assert f"data.shards={folder / 'shards' / 'digits'}" in point.overrides
    assert "surrogate.weights=~/w.pt" in point.overrides  # ~ and absolute paths as they are
    assert f"data.root={tmp_path}/raw" in point.overrides
    monkeypatch.chdir(tmp_path)  # under the cwd: relative, as the scripts' run directories
    point = load_sweep(spec).points[0]
    assert point.config == Path("specs/mine.yaml")
    assert "data.shards=specs/shards/digits" in point.overrides


def _profiles(tmp_path: Path, shipped: str, **changes) -> Path:
    """A folder of the user's own profiles: the ``shipped`` profile, changed."""
    data = {**yaml.safe_load((machines_dir() / f"{shipped}.yaml").read_text()), **changes}
    folder = tmp_path / "my-machines"
    folder.mkdir(exist_ok=True)
    (folder / f"{data['name']}.yaml").write_text(yaml.safe_dump(data))
    return folder


def test_the_users_profiles_come_first_and_say_they_replace_a_shipped_one(tmp_path, monkeypatch):
    mine = _profiles(tmp_path, "frontier", partition="extended")
    sweep = _shipped("paper-frontier.yaml", mine)
    assert sweep.machine.partition == "extended"
    assert sweep.notes == [f"machine profile 'frontier': {mine / 'frontier.yaml'}, in place of "
                           f"the shipped {machines_dir() / 'frontier.yaml'}"]
    assert _shipped("paper-frontier.yaml").machine.partition == "batch"
    monkeypatch.setenv("HPCUE_MACHINES", f"{tmp_path / 'none'}{os.pathsep}{mine}")
    with pytest.raises(ConfigError, match=r"\$HPCUE_MACHINES: .*none is not a folder"):
        _shipped("paper-frontier.yaml")
    monkeypatch.setenv("HPCUE_MACHINES", str(mine))
    assert _shipped("paper-frontier.yaml").machine.partition == "extended"
    _profiles(tmp_path, "summit", name="cluster-b")
    sweep = load_sweep(_profile_spec(tmp_path, "cluster-b"))
    assert sweep.machine.name == "cluster-b" and not sweep.notes  # a new name: no note


def test_an_unknown_profile_names_the_known_ones_and_where_it_looked(tmp_path):
    mine = _profiles(tmp_path, "summit", name="cluster-b")
    with pytest.raises(ConfigError) as err:
        load_sweep(_profile_spec(tmp_path, "cray-xyz"), mine)
    assert (f"unknown machine profile 'cray-xyz' (known: cluster-b, frontier, local, lsf-jsrun, "
            f"slurm-gpu, summit; looked in {mine}, {machines_dir()} (shipped); your own: "
            f"--machines DIR or $HPCUE_MACHINES)") in str(err.value)


def test_the_cli_renders_a_shipped_spec_by_name_from_another_directory(tmp_path):
    """--scheduler defaults to the profile's; --machines and the note reach the command line."""
    mine = _profiles(tmp_path, "local", cpus_per_task=2, cores_per_node=4)
    proc = hpcue("sweep", "render", "digits-local", "--out", "out", "--machines", str(mine),
                 cwd=tmp_path)
    assert "[hpcue] machine profile 'local': " in proc.stdout
    assert "[hpcue] rendered 10 slurm scripts into out" in proc.stdout
    text = (tmp_path / "out" / "digits-b16-s0.sbatch").read_text()
    assert f"--config {configs_dir() / 'debug-digits.yaml'} --out runs/digits-local/" in text
    assert "export SRUN_CPUS_PER_TASK=2\n" in text
    assert not (tmp_path / "runs").exists()  # render writes the scripts only
    wrong = hpcue("sweep", "render", "digits-local", "--scheduler", "lsf", "--out", "lsf",
                  cwd=tmp_path, check=False)
    assert wrong.returncode == 2 and wrong.stderr.count("\n") == 1, wrong.stderr
    assert ("machine profile 'local' uses slurm, not lsf: leave out --scheduler, or choose a "
            "profile for lsf") in wrong.stderr
    assert not (tmp_path / "lsf").exists()


def test_a_configs_relative_inputs_not_found_from_here_are_named_before_submitting(
        tmp_path, monkeypatch):
    """A config's relative data.shards is read by each job from where it is submitted: render
    warns when it is not there (the spec's own relative overrides come from its folder)."""
    folder = tmp_path / "specs"
    folder.mkdir()
    (folder / "mine.yaml").write_text(yaml.safe_dump(
        {"name": "mine", "data": {"dataset": "digits", "shards": "shards/digits-16"}}))
    (folder / "spec.yaml").write_text(yaml.safe_dump(
        {"name": "rel", "configs": ["mine.yaml"], "global_batch_sizes": [32], "seeds": [0, 1],
         "nodes": 1, "walltime": "00:20:00", "machine": "local"}))
    monkeypatch.chdir(tmp_path)
    (unfound,) = load_sweep(folder / "spec.yaml").unfound  # one note for both points
    assert unfound == (f"mine.yaml: data.shards=shards/digits-16 is relative: each job reads it "
                       f"from the directory it is submitted from, and it is not in {tmp_path}; "
                       f"submit from where it is, or give an absolute path")
    proc = hpcue("sweep", "render", str(folder / "spec.yaml"), "--out", str(tmp_path / "jobs"),
                 cwd=tmp_path)
    assert f"[hpcue] WARNING: {unfound}" in proc.stderr
    (tmp_path / "shards" / "digits-16").mkdir(parents=True)  # prepared where jobs start
    assert load_sweep(folder / "spec.yaml").unfound == []
