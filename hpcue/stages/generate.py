"""Stage 2: the unlearnable training set, clamp(x + delta_c(x), 0, 1) saved as 8-bit images.

Written in the shard format, shard for shard beside the clean training split, so every later
reader (evaluation, users' own training) reads it like any prepared data set. Beside it,
preview.png, drawn by ``figures/preview.py``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch

from hpcue.attacks.base import perturb
from hpcue.data.meta_io import write_meta
from hpcue.data.shard_set import ShardSet, open_shards
from hpcue.data.shards import ShardError, ShardInfo, reading, write_shard
from hpcue.data.tensors import to_float, to_uint8
from hpcue.distributed import collectives
from hpcue.errors import InputError
from hpcue.evaluation.metrics import psnr_ssim, quality_sums
from hpcue.figures.preview import PREVIEW_MAX_ROWS, draw_preview
from hpcue.io import atomic_write, file_sha256
from hpcue.stages.artifacts import read_clusters, read_perturbations
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
        infos = [ShardInfo(i.file, i.num_samples, file_sha256(tmp / i.file))
                 for i in data.shards("train")]
        write_meta(tmp, f"{data.meta['dataset']}+uc", data.classes, data.image_shape,
                   {"train": infos}, {"source": str(data.root)})
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)
    collectives.barrier()
    return {"max_abs_pixel_change_255": int(maxima.max()),
            "mean_abs_pixel_change_255": round(float(sums[0] / max(float(sums[1]), 1.0)), 3),
            "psnr_db": None if psnr is None else round(psnr, 2), "ssim": round(ssim, 4)}


def read_images(shards: ShardSet, ids: list[int]) -> dict[int, np.ndarray]:
    """Training images by global sample id (id i is the i-th image of the split), each shard
    opened once and closed again."""
    counts = [s.num_samples for s in shards.shards("train")]
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    by_shard: dict[int, list[int]] = {}
    for i in ids:
        by_shard.setdefault(int(np.searchsorted(offsets, i, side="right") - 1), []).append(i)
    out = {}
    for s, members in by_shard.items():
        path = shards.root / shards.shards("train")[s].file
        with reading(path) as f:
            for i in members:
                out[i] = f["images"][i - int(offsets[s])]
    return out


def write_preview(path: Path, clean: ShardSet, unlearnable: ShardSet, deltas: torch.Tensor,
                  groups: torch.Tensor, epsilon: float) -> None:
    """preview.png: one row per group (a cluster, a class or an image; the first
    PREVIEW_MAX_ROWS), labelled with its size: its first image clean, the same image
    unlearnable, and its perturbation amplified."""
    k = len(deltas)
    assignments = groups.cpu().numpy()
    counts = np.bincount(assignments, minlength=k).tolist()
    values, first = np.unique(assignments, return_index=True)  # each cluster's lowest id
    member = {int(c): int(i) for c, i in zip(values, first, strict=True) if c < PREVIEW_MAX_ROWS}
    rows = min(k, PREVIEW_MAX_ROWS)
    ids = sorted(member.values())
    clean_images, ul_images = read_images(clean, ids), read_images(unlearnable, ids)
    preview = draw_preview(
        [clean_images[member[c]] if c in member else None for c in range(rows)],
        [ul_images[member[c]] if c in member else None for c in range(rows)],
        deltas[:rows].detach().float().cpu().numpy(), counts, epsilon,
        gray=clean.grayscale or deltas.shape[1] == 1, dataset=clean.meta.get("dataset"))
    atomic_write(path, lambda tmp: tmp.write_bytes(preview.png))


def run(ctx: StageContext) -> dict:
    data, run_dir = ctx.data, ctx.run
    clusters = read_clusters(run_dir)
    perturbations = read_perturbations(run_dir)
    deltas = perturbations.deltas
    if len(clusters.assignments) != data.size("train"):
        raise InputError(f"{run_dir.clusters} has {len(clusters.assignments)} assignments but the "
                         f"training set has {data.size('train')} images: rerun `hpcue cluster`")
    groups = perturbations.groups_or(clusters)
    if len(groups) != data.size("train"):
        raise InputError(f"{run_dir.perturbations} has groups for {len(groups)} images but the "
                         f"training set has {data.size('train')}: rerun `hpcue train`")
    record = write_unlearnable(data, run_dir.unlearnable, deltas, groups)
    if collectives.is_main():
        # the bound the deltas were made under, as saved with them
        write_preview(run_dir.preview, data, open_shards(run_dir.unlearnable), deltas, groups,
                      perturbations.epsilon)
    record["num_images"] = data.size("train")
    return record
