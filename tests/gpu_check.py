"""A two-minute check for a lent GPU node (not collected by pytest: CI has no GPU).

    python -m tests.gpu_check     # from the repository root: one GPU, then torchrun over 2 if any

Runs the whole pipeline at tiny sizes with runtime.accelerator=gpu, full victim protocol
(seeds, baselines, defenses: the ensemble, the per-cluster all-reduce of stage 1 and the
accuracy reductions over NCCL), and checks what the run says about itself, after `hpcue doctor`
on the GPU in bf16 (versions, the GPUs, every stage once in mixed precision) and stage 1's
sharded generators in 16-mixed and bf16-mixed with fused AdamW (and with LAMB and LARS for a
fixed number of steps), the bilevel attacks (EM sample-wise in 16-mixed, AUE in bf16), and a
CLIP RN50 surrogate (random weights) through clustering and stage 1 in bf16, a run with every
``runtime`` speed option on, and an export whose test split is protected on the GPU.
Exits non-zero with the reason on any failure.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from tests.conftest import FULL_PROTOCOL, REPO, tiny_sets


def run(prefix: list[str], out: Path) -> dict:
    cmd = [*prefix, "run", "--out", str(out),
           *tiny_sets([*FULL_PROTOCOL, "runtime.accelerator=gpu", "runtime.max_micro_batch=auto"])]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    if proc.returncode:
        sys.exit(f"FAILED: {' '.join(cmd[:6])}...\n{proc.stderr[-3000:]}")
    if "backend=nccl device=cuda" not in proc.stdout:
        sys.exit(f"FAILED: the run did not use NCCL on a GPU:\n{proc.stdout[:500]}")
    results = json.loads((out / "results.json").read_text())
    assert results["victims"]["uc"]["n"] == 2 and results["psnr_db"] > 0, results
    # the micro-batch probe ran a trial step on the GPU (tiny batches fit at once)
    for key in ("stage1_batch", "victim_batch"):
        assert results[key]["micro_batch_tried"] == [results[key]["per_rank_batch_size"]], key
    return results


def export(cli: list[str], run_dir: Path, out: Path) -> None:
    """``hpcue export`` of a finished run: its test split is protected on the GPU (surrogate
    features, nearest cluster center) and published beside the training split."""
    proc = subprocess.run([*cli, "export", str(run_dir), "--format", "npz", "--out", str(out),
                           "--even-if-unprotected"], cwd=REPO, capture_output=True, text=True,
                          timeout=600)
    if proc.returncode:
        sys.exit(f"FAILED: export on the GPU\n{proc.stderr[-3000:]}")
    splits = json.loads((out / "manifest.json").read_text())["splits"]
    assert splits["train"] > 0 and splits["test"] > 0, splits


def stages(cli: list[str], out: Path, sets: list[str], what: str) -> None:
    """The cluster stage and stage 1 into ``out``; exits naming ``what`` on a failure."""
    for stage in ("cluster", "train"):
        proc = subprocess.run([*cli, stage, "--out", str(out), *sets], cwd=REPO,
                              capture_output=True, text=True, timeout=600)
        if proc.returncode:
            sys.exit(f"FAILED: {stage} {what}\n{proc.stderr[-3000:]}")


def sharded_stage1(cli: list[str], tmp: Path) -> None:
    """Stage 1's sharded path (manual optimization, deltas gathered in fp32, each owner's loss
    scale) in both mixed precisions: 16-mixed is the one GradScaler path, which CPUs lack."""
    for precision in ("16-mixed", "bf16-mixed"):
        out = tmp / f"shard-{precision}"
        # the fused AdamW too: a rank receives state of generators it never stepped, whose
        # step count a fused kernel reads on the device (sharding.sync_owned_state)
        sets = tiny_sets(["runtime.accelerator=gpu", f"runtime.precision={precision}",
                          "train.generator_parallel=shard", "train.epochs=3",
                          "runtime.fused_optimizer=true"])
        stages(cli, out, sets, f"sharded in {precision}")
        record = json.loads((out / "stages" / "train.json").read_text())
        deltas = torch.load(out / "perturbations.pt", weights_only=True)["deltas"]
        assert record["generator_parallel"] == "shard", record
        assert deltas.dtype == torch.float32 and bool(torch.isfinite(deltas).all())
        assert 0 < float(deltas.abs().max()) <= record["epsilon"] + 1e-6
        print(f"stage 1 sharded in {precision}: loss {record['final_uc_loss']:.4f}, "
              f"{record['images_per_second']} images/s")


def large_batch_stage1(cli: list[str], tmp: Path) -> None:
    """LAMB and LARS (timm's, train.optimizer) in stage 1's sharded path on the GPU, each for a
    fixed number of steps (train.steps): LAMB under 16-mixed's GradScaler, LARS in bf16."""
    for optimizer, lr, precision in (("lamb", 0.003, "16-mixed"), ("lars", 1.0, "bf16-mixed")):
        out = tmp / f"{optimizer}-{precision}"
        sets = tiny_sets(["runtime.accelerator=gpu", f"runtime.precision={precision}",
                          "train.generator_parallel=shard", f"train.optimizer={optimizer}",
                          f"train.lr={lr}", "train.steps=7"])
        stages(cli, out, sets, f"{optimizer} in {precision}")
        record = json.loads((out / "stages" / "train.json").read_text())
        assert record["optimizer"] == optimizer, record
        assert record["budget"]["optimizer_steps"] == 7, record["budget"]
        deltas = torch.load(out / "perturbations.pt", weights_only=True)["deltas"]
        assert bool(torch.isfinite(deltas).all()) and float(deltas.abs().max()) > 0
        print(f"stage 1 with {optimizer} in {precision}: 7 steps, loss "
              f"{record['final_uc_loss']:.4f}")


def bilevel_stage1(cli: list[str], tmp: Path) -> None:
    """The bilevel attacks on the GPU: sample-wise error-minimizing noise in 16-mixed (its
    model's gradients summed by the module, unscaled by the GradScaler before EM's clipping),
    AUE in bf16-mixed (kornia's augmentation on the device, crafted through), Bayes-error
    maximisation in 16-mixed (the feature gradient carried back through half-precision
    features, AdamW's moments on the device)."""
    runs = (("em_samplewise", "16-mixed", ["attack.pgd_steps=3", "train.epochs=2"]),
            ("aue", "bf16-mixed", ["attack.pgd_steps=3", "train.epochs=2"]),
            ("bayes_error", "16-mixed", ["attack.bayes_steps=2",
                                         "attack.bayes_retrain_epochs=1"]))
    for attack, precision, settings in runs:
        out = tmp / f"{attack}-{precision}"
        sets = tiny_sets(["runtime.accelerator=gpu", f"runtime.precision={precision}",
                          f"attack.name={attack}", *settings])
        stages(cli, out, sets, f"{attack} in {precision}")
        record = json.loads((out / "stages" / "train.json").read_text())
        saved = torch.load(out / "perturbations.pt", weights_only=True)
        assert record["attack"]["name"] == attack and len(record["rounds"]) >= 1, record
        assert bool(torch.isfinite(saved["deltas"]).all()), attack
        assert 0 < float(saved["deltas"].abs().max()) <= record["epsilon"] + 1e-6
        assert all(bool(torch.isfinite(v.float()).all()) for v in saved["model"].values())
        figures = [r.get("perturbed_train_error", r.get("bayes_error"))
                   for r in record["rounds"]]
        print(f"{attack} in {precision}: per round {figures}")


def clip_stages(cli: list[str], tmp: Path) -> None:
    """A CLIP surrogate (RN50, random weights in open_clip's own file format) through the
    cluster stage and stage 1 on the GPU in bf16: the resize inside the tower, the input
    gradient through the attention pool."""
    import open_clip

    weights = tmp / "clip-rn50.bin"
    torch.save(open_clip.create_model("RN50-quickgelu", pretrained=None).state_dict(), weights)
    out = tmp / "clip"
    sets = tiny_sets(["runtime.accelerator=gpu", "runtime.precision=bf16-mixed",
                      "surrogate.arch=clip_rn50", f"surrogate.weights={weights}",
                      "train.epochs=1"])
    stages(cli, out, sets, "with a CLIP surrogate")
    record = json.loads((out / "stages" / "cluster.json").read_text())
    assert record["feature_dim"] == 1024 and record["surrogate_pretraining"] == "clip", record
    deltas = torch.load(out / "perturbations.pt", weights_only=True)["deltas"]
    assert bool(torch.isfinite(deltas).all()) and float(deltas.abs().max()) > 0
    print(f"CLIP RN50 surrogate: {record['feature_dim']}-d features, stage 1 ran")


def every_learner(cli: list[str], tmp: Path) -> None:
    """The evaluation's other learners on the GPU in bf16-mixed: SimCLR and BYOL (lightly's
    heads, kornia's views on the device), timm's ViT-Tiny beside the small CNN, a mixed set,
    and SAL's per-layer SGD for the Unlearnable Distance."""
    out = tmp / "learners"
    cmd = [*cli, "run", "--out", str(out), *tiny_sets([
        "runtime.accelerator=gpu", "runtime.precision=bf16-mixed",
        "victim.contrastive=[simclr, byol]", "victim.contrastive_epochs=1",
        "victim.other_archs=[vit_tiny]", "victim.mixed=[0.5]", "victim.ud=true",
        "victim.ud_iterations=1"])]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    if proc.returncode:
        sys.exit(f"FAILED: every learner on the GPU\n{proc.stderr[-3000:]}")
    results = json.loads((out / "results.json").read_text())
    for arm in ("simclr:uc", "byol:uc", "vit_tiny:uc", "uc@0.5"):
        assert 0 <= results["victims"][arm]["mean"] <= 1, (arm, results["victims"][arm])
    assert results["ud"]["arms"]["clean"]["ud"] == 0.0, results["ud"]
    print(f"every learner: worst case {results['worst_case_over_learners']}")


def every_speed_option(cli: list[str], tmp: Path) -> None:
    """Stage 1 and the victims with every ``runtime`` speed option on, in bf16 (channels-last
    surrogate and victims, each part compiled, fused AdamW and SGD, pinned pages), through
    hpcue's Trainer: it runs, records the options, and its deltas stay bounded."""
    out = tmp / "speed"
    sets = tiny_sets(["runtime.accelerator=gpu", "runtime.precision=bf16-mixed",
                      "runtime.channels_last=true",
                      "runtime.compile=[generator, surrogate, victim]",
                      "runtime.fused_optimizer=true", "runtime.pin_memory=true"])
    proc = subprocess.run([*cli, "run", "--out", str(out), *sets], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    if proc.returncode:
        sys.exit(f"FAILED: every speed option on the GPU\n{proc.stderr[-3000:]}")
    record = json.loads((out / "stages" / "train.json").read_text())
    assert record["provenance"]["speed"] | {"cudnn_benchmark": None} == {
        "channels_last": True, "compile": ["generator", "surrogate", "victim"],
        "fused_optimizer": True, "pin_memory": True, "cudnn_benchmark": None}, record
    deltas = torch.load(out / "perturbations.pt", weights_only=True)["deltas"]
    assert bool(torch.isfinite(deltas).all())
    assert 0 < float(deltas.abs().max()) <= record["epsilon"] + 1e-6
    print(f"every speed option: stage 1 {record['images_per_second']} images/s")


def main() -> None:
    if not torch.cuda.is_available():
        sys.exit("no CUDA device visible: run this on a GPU node")
    cli = [sys.executable, "-m", "hpcue.cli"]
    with tempfile.TemporaryDirectory() as tmp:
        doctor = subprocess.run([*cli, "doctor", "--out", tmp, "--set",
                                 "runtime.accelerator=gpu", "--set",
                                 "runtime.precision=bf16-mixed"],
                                cwd=REPO, capture_output=True, text=True, timeout=600)
        print(doctor.stdout[-3000:])
        if doctor.returncode:
            sys.exit(f"FAILED: hpcue doctor on the GPU\n{doctor.stderr[-3000:]}")
        sharded_stage1(cli, Path(tmp))
        large_batch_stage1(cli, Path(tmp))
        bilevel_stage1(cli, Path(tmp))
        every_learner(cli, Path(tmp))
        clip_stages(cli, Path(tmp))
        every_speed_option(cli, Path(tmp))
        one = run(cli, Path(tmp) / "one")
        print(f"one GPU: clean {one['clean_test_acc']}, uc {one['unlearnable_test_acc']}")
        export(cli, Path(tmp) / "one", Path(tmp) / "published")
        if torch.cuda.device_count() >= 2:
            torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                        "-m", "hpcue.cli"]
            two = run(torchrun, Path(tmp) / "two")
            assert two["world_size"] == 2, two["world_size"]
            print(f"two GPUs: clean {two['clean_test_acc']}, uc {two['unlearnable_test_acc']}")
    print("GPU check passed")


if __name__ == "__main__":
    main()
