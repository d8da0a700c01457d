"""Stage 2: the unlearnable training set, clamp(x + delta_c(x), 0, 1) saved as 8-bit images.

Written in the shard format, shard for shard beside the clean training split, so every later
reader (evaluation, users' own training) reads it like any prepared data set.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.utils import save_image

from hpcue.attacks.base import perturb
from hpcue.data.arrays import to_float, to_uint8, to_unit
from hpcue.data.loader import ShardDataset
from hpcue.data.shards import (
    ShardError,
    ShardInfo,
    ShardSet,
    open_shards,
    reading,
    sha256,
    write_meta,
    write_shard,
)
from hpcue.distributed import collectives
from hpcue.errors import InputError
from hpcue.evaluation.metrics import psnr_ssim, quality_sums
from hpcue.io import atomic_write
from hpcue.stages.artifacts import Clusters, read_clusters, read_perturbations
from hpcue.stages.context import StageContext


def perturb_uint8(images: np.ndarray, deltas: torch.Tensor, groups: torch.Tensor) -> np.ndarray:
    return to_uint8(perturb(to_float(torch.from_numpy(images)), deltas, groups))


def shard_quality(clean: np.ndarray, perturbed: np.ndarray, chunk: int = 64) -> torch.Tensor:
    """PSNR/SSIM partial sums of one shard, a chunk of images at a time (bounded memory)."""
    return sum((quality_sums(to_float(torch.from_numpy(clean[i:i + chunk])),
                             to_float(torch.from_numpy(perturbed[i:i + chunk])))
                for i in range(0, len(clean), chunk)), torch.zeros(4, dtype=torch.float64))


def write_unlearnable(data: ShardSet, out: Path, deltas: torch.Tensor,
                      assignments: torch.Tensor) -> dict:
    """Perturb each clean training shard into a shard of the same name; returns pixel stats
    and image quality (PSNR of the set, mean SSIM) against the clean images.

    Shard j is written by rank j mod world size; rank 0 checksums them, writes meta.json and
    renames the finished directory into place.
    """
    tmp = out.with_name(out.name + ".partial")
    if collectives.is_main():
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    collectives.barrier()
    rank, world = collectives.rank(), collectives.world_size()
    stats = torch.zeros(3, dtype=torch.float64)  # max change, sum of changes, count
    quality = torch.zeros(4, dtype=torch.float64)
    error = None
    try:
        for info in data.shards("train")[rank::world]:
            with reading(data.root / info.file) as f:
                images, labels, index = f["images"][:], f["labels"][:], f["index"][:]
            perturbed = perturb_uint8(images, deltas, assignments[torch.from_numpy(index)])
            write_shard(tmp / info.file, perturbed, labels, index)
            diff = np.abs(perturbed.astype(np.int16) - images.astype(np.int16))
            stats[0] = max(float(stats[0]), float(diff.max()))
            stats[1] += float(diff.sum())
            stats[2] += diff.size
            quality += shard_quality(images, perturbed)
    except (ShardError, OSError) as exc:  # this rank's shards only: every rank must hear of it
        error = exc
    try:
        collectives.raise_if_any(error, "writing the unlearnable shards")
    except Exception:
        if collectives.is_main():  # nothing half-written stays behind
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    maxima = collectives.assemble(stats[:1], torch.tensor([rank]), world)
    sums = collectives.all_reduce_sum(stats[1:])
    psnr, ssim = psnr_ssim(collectives.all_reduce_sum(quality))
    collectives.barrier()
    if collectives.is_main():
        infos = [ShardInfo(i.file, i.num_samples, sha256(tmp / i.file))
                 for i in data.shards("train")]
        write_meta(tmp, f"{data.meta['dataset']}+uc", data.classes, data.image_shape,
                   {"train": infos}, {"source": str(data.root)})
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)
    collectives.barrier()
    return {"max_abs_pixel_change": int(maxima.max()),
            "mean_abs_pixel_change": round(float(sums[0] / max(float(sums[1]), 1.0)), 3),
            "psnr_db": None if psnr is None else round(psnr, 2), "ssim": round(ssim, 4)}


def write_preview(path: Path, clean: ShardSet, unlearnable: ShardSet, deltas: torch.Tensor,
                  clusters: Clusters, epsilon: float) -> None:
    """One row per cluster: a clean image, its perturbed version, the perturbation amplified."""
    clean_ds, ul_ds = ShardDataset(clean, "train"), ShardDataset(unlearnable, "train")
    rows = []
    for k in range(clusters.num_clusters):
        members = (clusters.assignments == k).nonzero()
        if len(members) == 0:
            continue
        i = int(members[0])
        amplified = (deltas[k] / (2 * epsilon) + 0.5).clamp(0, 1).expand(3, -1, -1)
        rows += [to_unit(clean_ds[i][0]), to_unit(ul_ds[i][0]), amplified]
    grid = torch.stack(rows)
    scale = max(1, math.ceil(64 / grid.shape[-1]))
    grid = F.interpolate(grid, scale_factor=scale, mode="nearest")
    atomic_write(path, lambda tmp: save_image(grid, tmp, nrow=3, padding=2, format="png"))


def run(ctx: StageContext) -> dict:
    data, run_dir = ctx.data, ctx.run
    clusters = read_clusters(run_dir)
    deltas = read_perturbations(run_dir).deltas
    if len(clusters.assignments) != data.size("train"):
        raise InputError(f"{run_dir.clusters} has {len(clusters.assignments)} assignments but the "
                         f"training set has {data.size('train')} images: rerun `hpcue cluster`")
    record = write_unlearnable(data, run_dir.unlearnable, deltas, clusters.assignments)
    if collectives.is_main():
        write_preview(run_dir.preview, data, open_shards(run_dir.unlearnable), deltas, clusters,
                      ctx.cfg.train.epsilon)
    record["num_images"] = data.size("train")
    return record
