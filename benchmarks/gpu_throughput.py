"""Stage 1's and the victim's training steps on whatever device is here, against its limit.

The first thing to run when a GPU is lent. On the paper's setting (224 px, ten width-64
generators of 6 blocks, a ResNet-50 surrogate with random weights: speed does not depend on
them, a ResNet-18 victim) it measures, in one run, under the run's own defaults on that device
(on a GPU ``runtime.deterministic: auto`` is ``warn``: deterministic kernels, no autotuning):

    steps     stage 1's step (hpcue's UCModule: generators, perturbation, surrogate, the UC loss,
              backward, AdamW) and the victim's step (a VictimEnsemble of one ResNet-18, SGD),
              each at several batch sizes in both mixed precisions: steady-state images/s
              (CUDA events over 20 steps after 5 warm-up steps), achieved TFLOP/s from the FLOPs
              of one step (torch's FlopCounterMode), that as a share of the card's dense peak
              (PEAKS; an unknown card gets TFLOP/s only), and peak memory
    profile   the top kernels of stage 1's step by device time (torch.profiler), and how busy
              the device was over those steps
    feed      images/s the HDF5 loader delivers at 224 px (hpcue's ShardDataset and loader, the
              paper config's workers and twice that, pinned pages or not, the copy to the
              device), against what stage 1's step consumes: is the GPU starved? And the same
              with the augmentation in the workers instead of on the device, as hpcue does it
    trainer   stage 1 through hpcue's own Trainer (its callbacks, logging, progress) against the
              bare step, and one epoch checkpoint's save
    options   each option of training/speed.py, runtime.deterministic: false, and cuDNN's
              autotuning (which needs it), each alone and all together, side by side with the
              defaults at one batch; and the augmentation's cost on the device. Each option
              row also says whether it trains the same: its gradients against the defaults'
              (a tolerance of twice the gap between the mixed precision and fp32, at least
              1e-3) and its optimizer's update from the same gradients (1e-3). An option that
              changes either is printed WRONG and must never become a default
    hours     what the figures mean: GPU-hours of one stage-1 training on Oxford-IIIT Pet and
              on PathMNIST at the paper's settings (configs/paper-*.yaml), at the measured rate

    python benchmarks/gpu_throughput.py [--json OUT] [--budget-s 180]
    python benchmarks/gpu_throughput.py --tiny      # CPU-sized, for the test suite

Steps run on fixed batches already on the device, so the feed is measured apart from them.
Anything that fails (out of memory, a compile error) is a row saying so, not the end of the
run; ``--json`` is rewritten after every section, so a run cut short keeps what it measured.
The budget is checked between rows: the compiles come last, and one may run past it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import lightning
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

from hpcue.attacks.uc.module import UCModule
from hpcue.config import load_config
from hpcue.data.loader import IndexedImages, ShardDataset, make_loader
from hpcue.data.prepare import PrepareOptions, prepare
from hpcue.data.shard_set import open_shards
from hpcue.data.tensors import to_unit
from hpcue.distributed.topology import activate, detect
from hpcue.evaluation.ensemble import VictimEnsemble, identity
from hpcue.models.generator import ClusterGenerators
from hpcue.models.surrogate import IMAGENET_MEAN, IMAGENET_STD, Surrogate
from hpcue.models.victims import build_victim
from hpcue.stages.provenance import device_name
from hpcue.sweep.shipped import configs_dir
from hpcue.training import speed
from hpcue.training.batches import augment_batch, seeded_generator
from hpcue.training.micro_batch import random_batch
from hpcue.training.precision import MIXED_DTYPES, resolve_deterministic
from hpcue.training.trainer import TrainerSettings, make_trainer

#: dense (no sparsity) tensor-core peak in TFLOP/s per device torch sees, by a piece of its
#: name, most specific first; from the vendors' data sheets. An MI250X (MI250) shows as two
#: devices, one per die, each with half the card's 383 (362). A GH200 matches H200: the same
#: 989.
PEAKS: tuple[tuple[str, dict[str, float]], ...] = (
    ("H200 NVL", {"bf16-mixed": 835.0, "16-mixed": 835.0}),
    ("H200", {"bf16-mixed": 989.0, "16-mixed": 989.0}),
    ("H100 NVL", {"bf16-mixed": 835.0, "16-mixed": 835.0}),
    ("H100 PCIe", {"bf16-mixed": 756.0, "16-mixed": 756.0}),
    ("H100", {"bf16-mixed": 989.0, "16-mixed": 989.0}),
    ("A100", {"bf16-mixed": 312.0, "16-mixed": 312.0}),
    ("V100S", {"16-mixed": 130.0}),  # no bf16 tensor cores on any V100
    ("V100-PCIE", {"16-mixed": 112.0}),
    ("V100", {"16-mixed": 125.0}),
    ("MI250X", {"bf16-mixed": 191.5, "16-mixed": 191.5}),
    ("MI250", {"bf16-mixed": 181.0, "16-mixed": 181.0}),
)
DTYPES = {**MIXED_DTYPES, "32-true": None}
#: the training sets the GPU-hours are for: the paper configs, and their training images
PAPER_SETS = {"oxford-pet": ("paper-oxford-pet.yaml", 3680),
              "pathmnist": ("paper-pathmnist.yaml", 89996)}


def dense_peak(device_name: str, precision: str) -> float | None:
    """The card's dense peak for ``precision`` in TFLOP/s, or None for an unknown card (or a
    precision it has no tensor cores for)."""
    for piece, peaks in PEAKS:
        if piece.lower() in device_name.lower():
            return peaks.get(precision)
    return None


@dataclass(frozen=True)
class Sizes:
    """What is measured: the paper's setting, or ``--tiny``'s CPU-sized one."""

    image: int = 224
    width: int = 64
    blocks: int = 6
    clusters: int = 10
    classes: int = 37
    epsilon: float = 16 / 255
    surrogate: str = "resnet50"
    victim: str = "resnet18"
    batches: tuple[int, ...] = (32, 64, 128, 256)
    option_batch: int = 128
    precisions: tuple[str, ...] = ("bf16-mixed", "16-mixed")
    warmup: int = 5
    steps: int = 20
    feed_images: int = 1024
    workers: tuple[int, ...] = (4, 8)
    profile_steps: int = 3


TINY = Sizes(image=16, width=4, blocks=1, clusters=3, classes=4, batches=(4, 8), option_batch=8,
             precisions=("32-true", "bf16-mixed"), warmup=1, steps=2, feed_images=32,
             workers=(2,), profile_steps=1)


def paper_sizes() -> Sizes:
    """The benchmark's shapes from the paper config, so it measures what a paper run trains."""
    cfg = load_config(configs_dir() / "paper-oxford-pet.yaml")
    t = cfg.train
    return Sizes(image=cfg.data.image_size, width=t.generator_width, blocks=t.generator_blocks,
                 clusters=cfg.cluster.num_clusters, epsilon=t.epsilon,
                 surrogate=cfg.surrogate.arch, victim=cfg.victim.arch,
                 workers=tuple(sorted({cfg.data.num_workers, 2 * cfg.data.num_workers})))


# -- the steps -----------------------------------------------------------------------------------

def batch_on(device: torch.device, n: int, sizes: Sizes):
    """A random training batch (uint8 images, labels, ids) on the device, as the micro-batch
    probe makes one."""
    return tuple(t.to(device) for t in random_batch(n, sizes.image, sizes.classes, n))


class Step:
    """One optimizer step of a module on a fixed batch, as the Trainer runs it (mixed-precision
    autocast, 16-mixed's loss scaling), built under the speed options being measured."""

    def __init__(self, forward: Callable[[], torch.Tensor], optimizer: torch.optim.Optimizer,
                 precision: str, device: torch.device, before_step: Callable = lambda o: None):
        self.forward, self.optimizer, self.before_step = forward, optimizer, before_step
        self.dtype, self.device = DTYPES[precision], device
        self.scaler = torch.amp.GradScaler(device.type, enabled=precision == "16-mixed")

    def loss(self) -> torch.Tensor:
        with torch.autocast(self.device.type, dtype=self.dtype or torch.float32,
                            enabled=self.dtype is not None):
            return self.forward()

    def __call__(self) -> None:
        self.scaler.scale(self.loss()).backward()
        self.before_step(self.optimizer)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)


def uc_module(sizes: Sizes, images: int, augment: str = "crop_flip") -> UCModule:
    """hpcue's UCModule over K generators and the surrogate, ``images`` spread over K."""
    from torchvision import models

    torch.manual_seed(0)
    generators = ClusterGenerators(sizes.clusters, sizes.image, sizes.epsilon, sizes.width,
                                   sizes.blocks)
    surrogate = Surrogate(getattr(models, sizes.surrogate)(weights=None), IMAGENET_MEAN,
                          IMAGENET_STD)
    with torch.no_grad():
        width = surrogate(torch.zeros(1, 3, sizes.image, sizes.image)).shape[1]
    return UCModule(generators, surrogate, torch.randn(sizes.clusters, width),
                    torch.arange(images) % sizes.clusters, offset=1, lr=1e-4,
                    weight_decay=5e-4, min_lr=1e-6, augment=augment)


def uc_step(sizes: Sizes, batch: int, precision: str, device: torch.device,
            augment: str = "crop_flip") -> Step:
    """Stage 1's step: hpcue's UCModule over K generators and the surrogate."""
    module = uc_module(sizes, batch, augment)
    speed.apply(module)  # what SpeedUp does in a Trainer, under the options being measured
    module.to(device)
    module.on_fit_start()
    batch = module.on_after_batch_transfer(batch_on(device, batch, sizes), 0)
    return Step(lambda: module.training_step(batch, 0), module.optimizer(), precision, device,
                module.on_before_optimizer_step)


def victim_step(sizes: Sizes, batch: int, precision: str, device: torch.device,
                augment: str = "crop_flip") -> Step:
    """The victim's step: hpcue's VictimEnsemble of one ResNet-18 and its SGD."""
    torch.manual_seed(0)
    ensemble = VictimEnsemble([build_victim(sizes.victim, sizes.classes, sizes.image)],
                              ["uc"], [0], [identity], lr=0.1, momentum=0.9, weight_decay=5e-4,
                              augment=augment)
    speed.apply(ensemble)
    ensemble.to(device)
    batches = {"uc": batch_on(device, batch, sizes)}
    return Step(lambda: ensemble.training_step(batches, 0), ensemble.optimizer(), precision,
                device)


STEPS = {"stage1": uc_step, "victim": victim_step}


class SteadyClock(Callback):
    """Wall time from the first step after ``warmup`` to the epoch's end, the device synced
    at both ends: a Trainer's steady-state rate, its hooks and callbacks included."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.t0, self.seconds, self.images = warmup, 0.0, 0.0, 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == self.warmup:
            synchronize(pl_module.device)
            self.t0 = time.perf_counter()
        if batch_idx >= self.warmup:
            self.images += len(batch[0])

    def on_train_epoch_end(self, trainer, pl_module) -> None:  # before the epoch checkpoint
        synchronize(pl_module.device)
        self.seconds = time.perf_counter() - self.t0


def through_lightning(sizes: Sizes, device: torch.device, tmp: Path,
                      deterministic: bool | str) -> dict:
    """Stage 1 as ``hpcue train`` runs it: the same module fitted by hpcue's Trainer (its
    callbacks, progress display, logging) over in-memory batches at the options' batch, and
    one epoch checkpoint's save, which a short epoch pays once an epoch."""
    batch, precision = sizes.option_batch, sizes.precisions[0]
    row = {"step": "stage1", "batch": batch, "precision": precision}
    n = batch * (sizes.warmup + sizes.steps)
    images = torch.randint(0, 256, (n, sizes.image, sizes.image, 3), dtype=torch.uint8)
    loader = make_loader(IndexedImages(images.numpy(), np.zeros(n, np.int64)), batch,
                         shuffle=True, seed=0, pin_memory=device.type == "cuda")
    clock = SteadyClock(sizes.warmup)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # no banners, no tips
    activate(detect("local", "gpu" if device.type == "cuda" else "cpu"))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore")
        module = uc_module(sizes, n)
        trainer = make_trainer(TrainerSettings(precision, deterministic, 600.0),
                               tmp / "checkpoints",
                               tmp / "logs", "stage1", 1, callbacks=[clock])
        try:
            trainer.fit(module, loader)
            t0 = time.perf_counter()
            trainer.save_checkpoint(tmp / "one.ckpt")
            saved = time.perf_counter() - t0
        except Exception as exc:
            return row | {"error": error(exc)}
    size = (tmp / "one.ckpt").stat().st_size
    return row | {"images_per_s": clock.images / clock.seconds,
                  "checkpoint_s": saved, "checkpoint_gib": size / 2**30}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(step: Step, warmup: int, steps: int) -> tuple[float, int | None]:
    """Seconds per step over ``steps`` after ``warmup`` (CUDA events on a GPU, the wall clock
    on a CPU), and the peak device memory in bytes (None on a CPU)."""
    device = step.device
    for _ in range(warmup):
        step()
    synchronize(device)
    if device.type != "cuda":
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        return (time.perf_counter() - t0) / steps, None
    torch.cuda.reset_peak_memory_stats(device)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(steps):
        step()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / 1000 / steps, torch.cuda.max_memory_allocated(device)


def trained(step: Step) -> list[torch.Tensor]:
    return [p for group in step.optimizer.param_groups for p in group["params"]]


def gradients(step: Step) -> list[torch.Tensor]:
    """One forward and backward's gradients of everything the step trains (not stepped)."""
    step.loss().backward()
    grads = [torch.zeros_like(p, dtype=torch.float32) if p.grad is None
             else p.grad.detach().float().clone() for p in trained(step)]
    step.optimizer.zero_grad(set_to_none=True)
    return grads


def update_from(step: Step, grads: list[torch.Tensor]) -> list[torch.Tensor]:
    """The optimizer's update of one step from the given gradients (laid out as autograd
    lays them out, like their parameters: a fused step reads memory as it lies)."""
    params = trained(step)
    before = [p.detach().float().clone() for p in params]
    for p, g in zip(params, grads, strict=True):
        p.grad = torch.empty_like(p).copy_(g)
    step.optimizer.step()
    step.optimizer.zero_grad(set_to_none=True)
    return [p.detach().float() - b for p, b in zip(params, before, strict=True)]


def relative_difference(grads: list[torch.Tensor], reference: list[torch.Tensor]) -> float:
    """|g - g_ref| / |g_ref| over every trained tensor at once: float order moves it by far
    less than a percent; a wrong gradient by its own size."""
    diff = sum(float((g - r).double().square().sum()) for g, r in zip(grads, reference,
                                                                      strict=True))
    norm = sum(float(r.double().square().sum()) for r in reference)
    return (diff / norm) ** 0.5 if norm > 0 else float(diff > 0)


def step_flops(step: Step) -> int:
    """The FLOPs of one step's forward and backward (the optimizer's are a rounding error)."""
    with FlopCounterMode(display=False) as counter:
        step.loss().backward()
    step.optimizer.zero_grad(set_to_none=True)
    return counter.get_total_flops()


#: the smallest gradient tolerance, and the update's: float order alone stays far below
SAME_TRAINING = 1e-3


@dataclass
class Reference:
    """The defaults' training of one step kind, for the option rows to be checked against:
    gradients in the timed precision, the optimizer's update from them, and the tolerance
    (twice the mixed precision's own distance from fp32, at least ``SAME_TRAINING``)."""

    grads: list[torch.Tensor]
    update: list[torch.Tensor]
    tolerance: float


def error(exc: BaseException) -> str:
    lines = str(exc).splitlines()
    return f"{type(exc).__name__}: {(lines[0] if lines else repr(exc))[:200]}"


@contextmanager
def torch_flags(deterministic: bool, cudnn_benchmark: bool) -> Iterator[None]:
    """The flags a Trainer sets for ``runtime.deterministic`` (truthy: deterministic kernels,
    warning where there is none) and cuDNN's autotuning, put back afterwards."""
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    torch.backends.cudnn.benchmark = cudnn_benchmark
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.benchmark = False


def measure(kind: str, sizes: Sizes, batch: int, precision: str, device: torch.device,
            options: speed.Speed, *, deterministic: bool, cudnn_benchmark: bool = False,
            augment: str = "crop_flip", flops: bool = True,
            reference: Reference | None = None) -> dict:
    """One row: the step built and timed under ``options``; a failure is the row's error.
    With ``reference``, the row says whether the options train as the defaults do."""
    row = {"step": kind, "batch": batch, "precision": precision}
    speed.activate(options)
    try:
        with torch_flags(deterministic, cudnn_benchmark), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*self.log.*")
            step = STEPS[kind](sizes, batch, precision, device, augment)
            counted = step_flops(step) if flops else None
            if reference is not None:
                grads = gradients(step)
                moved = relative_difference(grads, reference.grads)
                update = relative_difference(update_from(step, reference.grads),
                                             reference.update)
                row |= {"gradient_difference": moved, "update_difference": update,
                        "tolerance": reference.tolerance,
                        "same_training": moved <= reference.tolerance
                        and update <= SAME_TRAINING}
            seconds, peak = timed(step, sizes.warmup, sizes.steps)
    except Exception as exc:  # an out-of-memory or a compile failure is a figure too
        return row | {"error": error(exc)}
    finally:
        speed.activate(speed.Speed())
        if device.type == "cuda":
            torch.cuda.empty_cache()
    row |= {"seconds_per_step": seconds, "images_per_s": batch / seconds,
            "peak_memory_gib": None if peak is None else peak / 2**30}
    if counted is not None:
        tflops = counted / seconds / 1e12
        peak_tflops = dense_peak(device_name(str(device)), precision)
        row |= {"flops_per_step": counted, "tflops": tflops,
                "peak_share": None if peak_tflops is None else tflops / peak_tflops}
    return row


def reference(kind: str, sizes: Sizes, device: torch.device, deterministic: bool) -> Reference:
    """The defaults' gradients and update at the options' batch and precision, and the gap
    between those gradients and fp32's (with TF32 off), which sets the tolerance."""
    precision, batch = sizes.precisions[0], sizes.option_batch
    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    with torch_flags(deterministic, False), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*self.log.*")
        step = STEPS[kind](sizes, batch, precision, device)
        grads = gradients(step)
        update = update_from(step, grads)
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        try:
            exact = gradients(STEPS[kind](sizes, batch, "32-true", device))
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
    gap = relative_difference(grads, exact)
    return Reference(grads, update, max(SAME_TRAINING, 2 * gap))


# -- what is measured ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Option:
    """One option row: the speed options, and the run's deterministic setting (None: the
    device's default) and cuDNN autotuning, which hpcue turns on exactly when not
    deterministic (pipeline.start)."""

    fields: dict
    deterministic: bool | None = None

    def speed(self) -> speed.Speed:
        return speed.Speed(**self.fields)


#: each option alone, then all together
OPTIONS: dict[str, Option] = {
    "defaults": Option({}),
    "not deterministic": Option({}, deterministic=False),  # with cuDNN's autotuning
    "channels_last": Option({"channels_last": True}),
    "fused optimizer": Option({"fused_optimizer": True}),
    "compile generator": Option({"compile": ("generator",)}),
    "compile surrogate": Option({"compile": ("surrogate",)}),
    "compile victim": Option({"compile": ("victim",)}),
}
COMPILES = {"stage1": ("generator", "surrogate"), "victim": ("victim",)}


def options_for(kind: str) -> dict[str, Option]:
    """The option rows of one step: those that act on it, and all of them together."""
    out = {name: o for name, o in OPTIONS.items()
           if set(o.fields.get("compile", ())) <= set(COMPILES[kind])}
    out["all of these"] = Option({"channels_last": True, "fused_optimizer": True,
                                  "compile": COMPILES[kind]}, deterministic=False)
    return out


class Budget:
    """The run's time limit: once spent, the remaining rows say they were skipped."""

    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def left(self) -> bool:
        return time.monotonic() < self.end


SKIPPED = "skipped: time budget spent"


def sweep_batches(sizes: Sizes, device: torch.device, budget: Budget,
                  deterministic: bool) -> list[dict]:
    rows = []
    for precision in sizes.precisions:
        for kind in STEPS:
            for batch in sizes.batches:
                if not budget.left():
                    rows.append({"step": kind, "batch": batch, "precision": precision,
                                 "error": SKIPPED})
                    continue
                rows.append(measure(kind, sizes, batch, precision, device, speed.Speed(),
                                    deterministic=deterministic))
                print(line(rows[-1]), flush=True)
    return rows


def sweep_options(sizes: Sizes, device: torch.device, budget: Budget, deterministic: bool,
                  chosen: list[str] | None = None) -> list[dict]:
    """Every option row of both steps: first those that compile nothing, then the compiles
    (the slowest to set up), so a spent budget skips compiles before anything else."""
    precision, batch, rows = sizes.precisions[0], sizes.option_batch, []
    references: dict[str, Reference | None] = {}
    base: dict[str, dict] = {}
    for compiles in (False, True):
        for kind in STEPS:
            if kind not in references:
                try:
                    references[kind] = (reference(kind, sizes, device, deterministic)
                                        if budget.left() else None)
                except Exception as exc:
                    references[kind] = None
                    rows.append({"step": kind, "option": "defaults", "error": error(exc)})
            todo = [(name, o, "crop_flip") for name, o in options_for(kind).items()
                    if bool(o.fields.get("compile")) == compiles
                    and (chosen is None or name in chosen or name == "defaults")]
            if not compiles:  # what the augmentation costs where hpcue does it: on the device
                todo.append(("no augmentation", Option({}), "none"))
            for name, option, augment in todo:
                if not budget.left() or references[kind] is None:
                    why = SKIPPED if not budget.left() else "skipped: no defaults to check by"
                    rows.append({"step": kind, "option": name, "error": why})
                    continue
                det = deterministic if option.deterministic is None else option.deterministic
                row = {"option": name} | measure(
                    kind, sizes, batch, precision, device, option.speed(), deterministic=det,
                    cudnn_benchmark=not det, augment=augment, flops=False,
                    reference=references[kind] if augment == "crop_flip" else None)
                if name == "defaults":
                    base[kind] = row
                ref_row = base.get(kind)
                if ref_row is not None and "error" not in row and "error" not in ref_row:
                    row["vs_defaults"] = row["images_per_s"] / ref_row["images_per_s"]
                rows.append(row)
                print(line(row), flush=True)
    return rows


class AugmentedInWorkers(torch.utils.data.Dataset):
    """The shard dataset with the augmentation done per image in the loader's workers (the
    alternative to hpcue's on the device), yielding float images as such a loader must."""

    def __init__(self, dataset: ShardDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        image, label, index = self.dataset[i]
        gen = seeded_generator([0, int(i)], torch.device("cpu"))
        return augment_batch(to_unit(image[None]), "crop_flip", gen)[0], label, index


def fabricate_shards(tmp: Path, sizes: Sizes) -> Path:
    """A prepared shard directory of ``feed_images`` random images at the benchmark's size."""
    root, out = tmp / "images", tmp / "shards"
    rng = np.random.default_rng(0)
    for i in range(sizes.feed_images):
        folder = root / f"class{i % 4}"
        folder.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (sizes.image, sizes.image, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:05d}.png", compress_level=0)
    prepare("imagefolder", root, out, PrepareOptions(image_size=sizes.image, shards=4))
    return out


def feed_rate(dataset, batch: int, workers: int, device: torch.device, pinned: bool) -> float:
    """Images/s of the fastest of two passes after a warm-up pass, each batch copied to the
    device (from pinned pages where ``pinned``, as ``runtime.pin_memory`` makes them)."""
    loader = make_loader(dataset, batch, shuffle=True, seed=0, num_workers=workers,
                         pin_memory=pinned)
    best = 0.0
    for epoch in range(3):
        loader.sampler.set_epoch(epoch)
        t0, seen = time.perf_counter(), 0
        for images, *_ in loader:
            images.to(device, non_blocking=True)
            seen += len(images)
        synchronize(device)
        if epoch:
            best = max(best, seen / (time.perf_counter() - t0))
    del loader
    return best


def sweep_feed(sizes: Sizes, device: torch.device, consumed: float | None,
               budget: Budget) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="hpcue-feed-") as tmp:
        shards = open_shards(fabricate_shards(Path(tmp), sizes))
        pinning = (True, False) if device.type == "cuda" else (False,)  # pages pin on GPUs
        for where, dataset in (("device", ShardDataset(shards, "train")),
                               ("workers", AugmentedInWorkers(ShardDataset(shards, "train")))):
            for workers in sizes.workers:
                for pinned in pinning if where == "device" else pinning[:1]:
                    row = {"augmentation": where, "workers": workers, "pinned": pinned}
                    if not budget.left():
                        rows.append(row | {"error": SKIPPED})
                        continue
                    rate = feed_rate(dataset, sizes.option_batch, workers, device, pinned)
                    rows.append(row | {"images_per_s": rate, "stage1_consumes": consumed,
                                       "keeps_up": None if consumed is None
                                       else rate >= consumed})
                    print(f"feed  augmentation in the {where:<8} workers {workers:>2} "
                          f"pinned {pinned!s:<5}: {rate:9.0f} images/s (stage 1 consumes "
                          f"{fmt(consumed, '.0f')})", flush=True)
    return rows


def profile(sizes: Sizes, device: torch.device, deterministic: bool) -> dict:
    """Stage 1's step under torch.profiler: the top kernels by their time on the device (on a
    CPU, the top operators by self CPU time), and the device's busy share of the profiled wall
    time (kernel time over wall time: below 1, the GPU waited for the host)."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    precision = sizes.precisions[0]
    with torch_flags(deterministic, False), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*self.log.*")
        step = uc_step(sizes, sizes.option_batch, precision, device)
        for _ in range(sizes.warmup):
            step()
        synchronize(device)
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA]
                                               if device.type == "cuda" else [])
        t0 = time.perf_counter()
        with torch_profile(activities=activities) as prof:
            for _ in range(sizes.profile_steps):
                step()
            synchronize(device)
        wall = time.perf_counter() - t0
    on_gpu = device.type == "cuda"
    if on_gpu:  # the kernels alone: an operator's time on the device is its kernels' again
        events = [e for e in prof.key_averages()
                  if e.device_type == DeviceType.CUDA and not e.is_user_annotation]

        def self_us(e) -> float:
            return float(e.self_device_time_total)
    else:
        events = list(prof.key_averages())

        def self_us(e) -> float:
            return float(e.self_cpu_time_total)

    busy = sum(self_us(e) for e in events)
    top = sorted(events, key=self_us, reverse=True)[:10]
    return {"precision": precision, "batch": sizes.option_batch, "steps": sizes.profile_steps,
            "wall_s": wall, "device_busy": busy / 1e6 / wall if on_gpu else None,
            "top": [{"name": e.key, "ms": self_us(e) / 1e3, "share": self_us(e) / (busy or 1.0)}
                    for e in top]}


def gpu_hours(rows: list[dict]) -> dict:
    """GPU-hours of one stage-1 training at the paper's settings, from the fastest measured
    rate at the paper's batch (or the largest that ran below it), per training set."""
    out = {}
    for name, (config, images) in PAPER_SETS.items():
        cfg = load_config(configs_dir() / config)
        ran = [r for r in rows if r["step"] == "stage1" and "error" not in r
               and r["batch"] <= cfg.train.global_batch_size]
        if not ran:
            continue
        best = max(ran, key=lambda r: (r["batch"], r["images_per_s"]))
        seconds = cfg.train.epochs * images / best["images_per_s"]
        out[name] = {"images": images, "epochs": cfg.train.epochs, "batch": best["batch"],
                     "precision": best["precision"], "images_per_s": best["images_per_s"],
                     "gpu_hours": seconds / 3600}
    return out


# -- printing ------------------------------------------------------------------------------------

def fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def line(row: dict) -> str:
    head = f"{row['step']:<7} {row.get('option', ''):<18} {row.get('precision', ''):<10} " \
           f"batch {row.get('batch', ''):>4}"
    if "error" in row:
        return f"{head}  {row['error']}"
    return (f"{head}  {row['images_per_s']:9.1f} images/s  {fmt(row.get('tflops'), '7.2f')} "
            f"TFLOP/s  peak {fmt(row.get('peak_share'), '6.1%')}  "
            f"mem {fmt(row.get('peak_memory_gib'), '5.1f')} GiB"
            + (f"  x{row['vs_defaults']:.2f}" if "vs_defaults" in row else "")
            + ("" if row.get("same_training", True) else
               f"  WRONG: gradients {row['gradient_difference']:.2%} off the defaults' "
               f"(tolerance {row['tolerance']:.2%}), update {row['update_difference']:.2%}"))


def versions() -> dict:
    return {"torch": torch.__version__, "cuda": torch.version.cuda,
            "hip": getattr(torch.version, "hip", None),
            "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available()
            else None, "lightning": lightning.__version__, "python": platform.python_version()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="CPU-sized shapes (the test suite's)")
    ap.add_argument("--json", type=Path, help="write every figure here too, after each section")
    ap.add_argument("--budget-s", type=float, default=180.0,
                    help="stop starting rows after this many seconds; later rows say so")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--options", type=lambda text: text.split(","), default=None,
                    help="only these option rows, comma-separated (default: every one of "
                         f"{', '.join([*OPTIONS, 'all of these'])})")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    sizes = TINY if args.tiny else paper_sizes()
    t0, budget = time.perf_counter(), Budget(args.budget_s)
    # the run's own default on this device (GPU: warn), as every Trainer sets it
    chosen = resolve_deterministic("auto", device.type == "cuda")
    deterministic = bool(chosen)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # what Lightning sets for it
    name = device_name(str(device))
    print(f"{name}; torch {torch.__version__}; {sizes.image} px, {sizes.clusters} generators "
          f"(width {sizes.width}, {sizes.blocks} blocks), {sizes.surrogate} surrogate, "
          f"{sizes.victim} victim; runtime.deterministic auto = {chosen}", flush=True)
    result: dict = {"started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    "device": name, "versions": versions(), "sizes": asdict(sizes),
                    "deterministic": chosen}

    def save() -> None:
        result["seconds"] = round(time.perf_counter() - t0, 1)
        if args.json:
            args.json.write_text(json.dumps(result, indent=1))

    # the goal's figures first, then what explains them; the compiles (slowest) come last
    result["steps"] = sweep_batches(sizes, device, budget, deterministic)
    result["hours"] = gpu_hours(result["steps"])
    save()
    result["profile"] = profile(sizes, device, deterministic) if budget.left() else None
    if result["profile"]:
        p = result["profile"]
        print(f"profile of stage 1 ({p['precision']}, batch {p['batch']}): device busy "
              f"{fmt(p['device_busy'], '.0%')} of the wall time", flush=True)
        for t in p["top"]:
            print(f"  {t['share']:6.1%} {t['ms']:9.2f} ms  {t['name'][:90]}", flush=True)
    save()
    consumed = next((r["images_per_s"] for r in result["steps"]
                     if r["step"] == "stage1" and r["batch"] == sizes.option_batch
                     and r["precision"] == sizes.precisions[0] and "error" not in r), None)
    result["feed"] = sweep_feed(sizes, device, consumed, budget)
    save()
    if budget.left():
        with tempfile.TemporaryDirectory(prefix="hpcue-fit-") as tmp:
            fit = through_lightning(sizes, device, Path(tmp), chosen)
        if consumed is not None and "error" not in fit:
            fit["vs_bare_step"] = fit["images_per_s"] / consumed
        result["lightning"] = fit
        print(f"stage 1 through hpcue's Trainer: {fmt(fit.get('images_per_s'), '.1f')} "
              f"images/s ({fmt(fit.get('vs_bare_step'), '.2f')} x the bare step); one epoch "
              f"checkpoint {fmt(fit.get('checkpoint_gib'), '.2f')} GiB saved in "
              f"{fmt(fit.get('checkpoint_s'), '.2f')} s {fit.get('error', '')}", flush=True)
        save()
    result["options"] = sweep_options(sizes, device, budget, deterministic, args.options)
    for set_name, h in result["hours"].items():
        print(f"one stage-1 training on {set_name} ({h['images']} images x {h['epochs']} "
              f"epochs) at {h['images_per_s']:.0f} images/s (batch {h['batch']}, "
              f"{h['precision']}): {h['gpu_hours']:.2f} GPU-hours", flush=True)
    save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
