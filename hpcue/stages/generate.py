"""Stage 2: the unlearnable training set, clamp(x + delta_c(x), 0, 1) saved as 8-bit images."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.utils import save_image

from hpcue.config import RunConfig
from hpcue.data.arrays import ImageArrays, to_float, to_uint8
from hpcue.rundir import RunDir, atomic_write
from hpcue.stages.common import Clusters, load_clusters, load_data, load_deltas, timed
from hpcue.uc.objective import perturb


def make_unlearnable(train: ImageArrays, deltas: torch.Tensor, assignments: torch.Tensor,
                     chunk: int = 512) -> ImageArrays:
    out = np.empty_like(train.images)
    for start in range(0, len(train), chunk):
        x = to_float(torch.from_numpy(train.images[start:start + chunk]))
        out[start:start + chunk] = to_uint8(perturb(x, deltas, assignments[start:start + chunk]))
    return ImageArrays(out, train.labels.copy(), list(train.classes))


def save_arrays(path: Path, arrays: ImageArrays) -> None:
    atomic_write(path, lambda tmp: np.savez(tmp.open("wb"), images=arrays.images,
                                            labels=arrays.labels,
                                            classes=np.array(arrays.classes)))


def load_arrays(path: Path) -> ImageArrays:
    with np.load(path, allow_pickle=False) as npz:
        return ImageArrays(npz["images"], npz["labels"], [str(c) for c in npz["classes"]])


def write_preview(path: Path, clean: ImageArrays, unlearnable: ImageArrays, deltas: torch.Tensor,
                  clusters: Clusters, epsilon: float) -> None:
    """One row per cluster: a clean image, its perturbed version, the perturbation amplified."""
    rows = []
    for k in range(clusters.num_clusters):
        members = (clusters.assignments == k).nonzero()
        if len(members) == 0:
            continue
        i = int(members[0])
        amplified = (deltas[k] / (2 * epsilon) + 0.5).clamp(0, 1)
        rows += [to_float(torch.from_numpy(clean.images[i:i + 1]))[0],
                 to_float(torch.from_numpy(unlearnable.images[i:i + 1]))[0], amplified]
    grid = torch.stack(rows)
    scale = max(1, math.ceil(64 / grid.shape[-1]))
    grid = F.interpolate(grid, scale_factor=scale, mode="nearest")
    atomic_write(path, lambda tmp: save_image(grid, tmp, nrow=3, padding=2, format="png"))


def run_generate(cfg: RunConfig, run: RunDir) -> Path:
    record: dict = {}
    with timed(record):
        train = load_data(cfg)["train"]
        clusters = load_clusters(run)
        deltas = load_deltas(run)
        if len(clusters.assignments) != len(train):
            raise ValueError(f"{run.clusters} has {len(clusters.assignments)} assignments but the "
                             f"training set has {len(train)} images: rerun `hpcue cluster`")
        unlearnable = make_unlearnable(train, deltas, clusters.assignments)
        save_arrays(run.unlearnable / "train.npz", unlearnable)
        write_preview(run.preview, train, unlearnable, deltas, clusters, cfg.train.epsilon)
    diff = np.abs(unlearnable.images.astype(np.int16) - train.images.astype(np.int16))
    record.update(num_images=len(unlearnable), max_abs_pixel_change=int(diff.max()),
                  mean_abs_pixel_change=round(float(diff.mean()), 3))
    run.write_record("generate", record)
    return run.unlearnable
