"""Generator sharding (train.generator_parallel): each rank owns some of the K generators; the
perturbations equal replicate's within float tolerance, under mpiexec and under torchrun, and
the checkpoints have replicate's format."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
import torch

from hpcue.attacks.uc.sharding import owners
from tests.conftest import REPO, hpcue, stop_after_first_epoch, tiny_sets
from tests.test_distributed import BIN, _env, _free_port, _run

# two epochs, as the issue asks; crop_flip so that every rank draws its own augmentation;
# 1344 training images (of digits' 1797), so that one global batch can be the whole set
SETS = tiny_sets(["train.epochs=2", "data.augment=crop_flip", "runtime.timeout_s=60",
                  # the rotation surrogate: with the MNIST-5k one, 2 epochs are chaotic enough that
                  # float order alone moves the deltas by 0.04 (replicate on 3 vs 2 ranks)
                  "surrogate.pretraining=self_supervised",
                  "data.test_fraction=0.252"])


def test_owners_are_balanced_or_spread():
    assert owners(10, 1) == [0] * 10
    sizes = [owners(10, 3).count(r) for r in range(3)]
    assert sorted(sizes) == [3, 3, 4]
    assert owners(10, 2) == [0] * 5 + [1] * 5
    spread = owners(10, 16)  # more ranks than generators: every owner distinct, over all ranks
    assert len(set(spread)) == 10 and spread[0] == 0 and spread[-1] >= 14
    assert all(b - a >= 1 for a, b in zip(spread, spread[1:], strict=False))


@pytest.fixture(scope="module")
def clustered(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sharding") / "base"
    hpcue("cluster", "--out", str(out), *SETS)
    return out


def _launch(launcher: str) -> list[str]:
    if launcher == "mpiexec":
        return [str(BIN / "mpiexec"), "-n", "2", str(BIN / "hpcue")]
    return [str(BIN / "torchrun"), "--nproc-per-node", "2", "--master-port",
            str(_free_port()), "-m", "hpcue.cli"]


def _train(base: Path, out: Path, launcher: str, mode: str, extra: tuple[str, ...] = ()) -> dict:
    shutil.copytree(base, out)
    _run([*_launch(launcher), "train", "--force", "--out", str(out), *SETS, *extra,
          "--set", f"train.generator_parallel={mode}"], _env())
    return json.loads((out / "stages" / "train.json").read_text())


def test_one_step_gradients_equal_replicate(clustered, tmp_path):
    """One optimizer step an epoch (each rank's 672 images in three accumulated micro-batches):
    Adam's first moment after it is 0.1 x the gradient, so the checkpoint
    shows whether shard's summed delta gradients and loss scaling equal DDP's average."""
    one_step = ("--set", "train.epochs=1", "--set", "train.global_batch_size=1344",
                "--set", "runtime.max_micro_batch=224")
    for mode in ("replicate", "shard"):
        record = _train(clustered, tmp_path / mode, "mpiexec", mode, one_step)
        plan = record["batch_plan"]
        assert plan["accumulate_grad_batches"] == 3 and plan["optimizer_steps_per_epoch"] == 1
    ca, cb = (torch.load(tmp_path / m / "checkpoints" / "train" / "last.ckpt",
                         weights_only=True) for m in ("replicate", "shard"))
    sa, sb = ca["optimizer_states"][0]["state"], cb["optimizer_states"][0]["state"]
    assert sa.keys() == sb.keys() and len(sa) > 0
    # biases before instance norm have a zero gradient, so float noise: tolerance is taken
    # against the largest moment of all (a wrong loss scale would be off by a factor of W)
    scale = max(float(v["exp_avg"].abs().max()) for v in sa.values())
    for i in sa:
        assert float(sa[i]["step"]) == float(sb[i]["step"]) == 1.0
        torch.testing.assert_close(sb[i]["exp_avg"], sa[i]["exp_avg"], rtol=1e-4,
                                   atol=1e-5 * scale)


@pytest.mark.parametrize("launcher", ["mpiexec", "torchrun"])
def test_shard_equals_replicate(clustered, tmp_path, launcher):
    records = {m: _train(clustered, tmp_path / m, launcher, m) for m in ("replicate", "shard")}
    assert {m: r["generator_parallel"] for m, r in records.items()} == {
        "replicate": "replicate", "shard": "shard"}
    a, b = (torch.load(tmp_path / m / "perturbations.pt", weights_only=True)
            for m in ("replicate", "shard"))
    assert a.keys() == b.keys() and a["epsilon"] == b["epsilon"]
    assert a["deltas"].shape == b["deltas"].shape and a["deltas"].dtype == b["deltas"].dtype
    diff = (a["deltas"] - b["deltas"]).abs()
    # float summation order differs (DDP averages parameter gradients; shard sums delta
    # gradients), and Adam's normalised steps let a few clamped pixels land apart. A whole
    # world-size change (one process against two ranks) agrees on only ~83% of pixels.
    # Seen here: 99.9% and 97.7% of pixels within 1/255 (two splits of digits), mean 7e-6 and
    # 2e-3; one process against two ranks: 83%, mean 0.019.
    assert float(diff.mean()) < 5e-3, float(diff.mean())
    assert float((diff <= 1 / 255).float().mean()) > 0.95
    for k, value in a["generators"].items():
        torch.testing.assert_close(b["generators"][k], value, atol=0.05, rtol=0)
    # the traffic each records: DDP's gradient all-reduce (and its broadcast of the noise
    # buffer every forward) against the deltas both ways; the K per-cluster counts, 8 bytes
    # each, in both; the epoch's gather apart
    params = sum(v.numel() for k, v in a["generators"].items() if k != "noise")
    noise, counts = 4 * a["generators"]["noise"].numel(), 8 * a["deltas"].shape[0]
    rep, sh = records["replicate"], records["shard"]
    assert rep["bytes_per_step"] == 4 * params + noise + counts
    assert rep["sync_bytes_per_epoch"] == 0
    assert sh["bytes_per_step"] == 2 * 4 * a["deltas"].numel() + counts
    assert sh["sync_bytes_per_epoch"] > 3 * 4 * params
    # the epoch checkpoints are one format: every generator and all its optimizer state
    ca, cb = (torch.load(tmp_path / m / "checkpoints" / "train" / "last.ckpt",
                         weights_only=True) for m in ("replicate", "shard"))
    assert ca["state_dict"].keys() == cb["state_dict"].keys()
    sa, sb = ca["optimizer_states"][0]["state"], cb["optimizer_states"][0]["state"]
    assert sa.keys() == sb.keys() and len(sa) == sum(1 for k in ca["state_dict"]
                                                     if k.startswith("generators.generators"))
    assert all(sa[i].keys() == sb[i].keys() for i in sa)
    assert all(float(sa[i]["step"]) == float(sb[i]["step"]) for i in sa)


def _killed_after_an_epoch(base: Path, out: Path, sets: list[str]) -> Path:
    """A sharded two-rank training stopped by SIGTERM once an epoch checkpoint past its first
    epoch is written (a job's wall time); returns that checkpoint."""
    shutil.copytree(base, out)
    proc = subprocess.Popen([*_launch("mpiexec"), "train", "--force", "--out", str(out), *sets],
                            cwd=REPO, env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    last = out / "checkpoints" / "train" / "last.ckpt"
    stderr = stop_after_first_epoch(proc, last)  # mpiexec passes SIGTERM to both ranks
    assert proc.returncode == 128 + signal.SIGTERM, stderr[-2000:]
    assert not (out / "perturbations.pt").exists()
    return last


LONG = [*SETS, "--set", "train.epochs=8"]


def test_killed_and_resumed_sharded_run_equals_uninterrupted(clustered, tmp_path):
    whole = tmp_path / "whole"
    shutil.copytree(clustered, whole)
    _run([*_launch("mpiexec"), "train", "--force", "--out", str(whole), *LONG], _env())
    cut = tmp_path / "cut"
    last = _killed_after_an_epoch(clustered, cut, LONG)
    rerun = _run([*_launch("mpiexec"), "train", "--out", str(cut), *LONG], _env())
    assert f"train: resuming from the epoch checkpoint {last}" in rerun.stdout
    a, b = (torch.load(d / "perturbations.pt", weights_only=True) for d in (whole, cut))
    torch.testing.assert_close(a["deltas"], b["deltas"])
    for k, value in a["generators"].items():
        torch.testing.assert_close(b["generators"][k], value)


def test_sharded_checkpoint_resumes_in_one_process(clustered, tmp_path):
    """Two sharded ranks stopped; the same command in one process (auto: replicate) resumes
    from their checkpoint: one format, whatever the world size or mode."""
    out = tmp_path / "run"
    last = _killed_after_an_epoch(clustered, out, LONG)
    stopped = torch.load(last, weights_only=True)["epoch"]
    rerun = hpcue("train", "--out", str(out), *LONG)
    assert f"train: resuming from the epoch checkpoint {last}" in rerun.stdout
    record = json.loads((out / "stages" / "train.json").read_text())
    assert record["generator_parallel"] == "replicate"
    # only the epochs after the stop ran: the meter resumed with the checkpoint
    assert torch.load(last, weights_only=True)["epoch"] == 7 > stopped
    assert record["train_images"] == 8 * record["batch_plan"]["images_per_epoch"]
    deltas = torch.load(out / "perturbations.pt", weights_only=True)["deltas"]
    assert deltas.abs().max() <= 16 / 255 + 1e-6 and deltas.abs().max() > 0


def test_sharded_in_bf16_mixed_gathers_fp32_deltas(tmp_path):
    """runtime.precision=bf16-mixed: the generators run under autocast, the deltas are gathered
    and kept in fp32, and the perturbations file is the same format as in fp32."""
    sets = tiny_sets(["runtime.precision=bf16-mixed", "runtime.timeout_s=60"])
    out = tmp_path / "run"
    hpcue("cluster", "--out", str(out), *sets)
    _run([*_launch("mpiexec"), "train", "--out", str(out), *sets,
          "--set", "train.generator_parallel=shard"], _env())
    record = json.loads((out / "stages" / "train.json").read_text())
    assert record["generator_parallel"] == "shard" and record["bytes_per_step"] > 0
    saved = torch.load(out / "perturbations.pt", weights_only=True)
    deltas = saved["deltas"]
    assert deltas.dtype == torch.float32 and bool(torch.isfinite(deltas).all())
    assert 0 < float(deltas.abs().max()) <= saved["epsilon"] + 1e-6
    assert all(v.dtype == torch.float32 for v in saved["generators"].values()
               if v.is_floating_point())


def test_more_ranks_than_generators(tmp_path):
    """K = 2 generators on 3 ranks: ranks 0 and 1 own one each, rank 2 owns none and does data
    work only (it steps no optimizer, but its schedule and its share of the gradients count)."""
    sets = [*SETS, "--set", "cluster.num_clusters=2", "--set", "train.global_batch_size=48",
            "--set", "victim.global_batch_size=48"]
    base = tmp_path / "base"
    hpcue("cluster", "--out", str(base), *sets)
    three = [str(BIN / "mpiexec"), "-n", "3", str(BIN / "hpcue")]
    deltas = {}
    for mode in ("replicate", "shard"):
        out = tmp_path / mode
        shutil.copytree(base, out)
        _run([*three, "train", "--force", "--out", str(out), *sets,
              "--set", f"train.generator_parallel={mode}"], _env())
        deltas[mode] = torch.load(out / "perturbations.pt", weights_only=True)["deltas"]
    assert deltas["shard"].shape[0] == 2
    diff = (deltas["shard"] - deltas["replicate"]).abs()
    assert float(diff.mean()) < 5e-3 and float((diff <= 1 / 255).float().mean()) > 0.95
