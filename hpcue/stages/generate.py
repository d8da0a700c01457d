"""Stage 2: the unlearnable training set, clamp(x + delta_c(x), 0, 1) saved as 8-bit images.

Written in the shard format, shard for shard beside the clean training split, so every later
reader (evaluation, users' own training) reads it like any prepared data set.
"""

from __future__ import annotations

import io
import math
import shutil
from dataclasses import dataclass
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
from hpcue.io import atomic_write, file_sha256
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


#: the most clusters a preview shows (the paper uses K = 10); more would make a figure nobody
#: reads and a PNG of tens of megapixels
PREVIEW_MAX_ROWS = 64
#: the shade of a cell that has no image (an empty cluster), on a 0 (black) .. 1 (white) scale
NO_IMAGE_GREY = 0.85


@dataclass(frozen=True)
class Preview:
    """A drawn preview: its PNG bytes, and the texts read back from the figure itself."""

    png: bytes
    size: tuple[int, int]      # width, height in pixels
    title: str
    columns: list[str]         # the column titles, left to right
    labels: list[str]          # one row label per cluster shown, top to bottom


def eps_text(epsilon: float) -> str:
    """epsilon as the n/255 of the paper: 8/255, or 4.5/255 when not a whole number."""
    return f"{epsilon * 255:.3g}/255"


def amplification(epsilon: float) -> str:
    """How much the preview amplifies a perturbation: it shows delta / (2 eps) + 0.5, which maps
    [-eps, eps] onto [0, 1] (grey is no change), so 1 / (2 eps) times."""
    return f"{1 / (2 * epsilon):.3g}"


def preview_columns(epsilon: float) -> list[str]:
    """The column titles (the title says what the amplification maps to)."""
    return ["clean", "unlearnable", f"perturbation × {amplification(epsilon)}"]


def preview_labels(counts: list[int], max_rows: int = PREVIEW_MAX_ROWS) -> list[str]:
    """One label per cluster shown (the first ``max_rows``), empty clusters included."""
    return [f"cluster {k} ({n} image{'' if n == 1 else 's'})"
            for k, n in enumerate(counts[:max_rows])]


def preview_title(epsilon: float, num_clusters: int, dataset: str | None = None,
                  max_rows: int = PREVIEW_MAX_ROWS) -> str:
    head = f"{dataset}: " if dataset else ""
    shown = (f" (first {max_rows} of {num_clusters} clusters shown)"
             if num_clusters > max_rows else "")
    return (f"{head}Unlearnable Clusters, ε = {eps_text(epsilon)}, K = {num_clusters}{shown}\n"
            f"each row: a cluster's first image, clean and unlearnable, and the cluster's\n"
            f"perturbation × {amplification(epsilon)} (±{eps_text(epsilon)} → full range, "
            f"grey = no change)")


def _column(images: list[np.ndarray | None], rows: int, shape: tuple[int, int], gap: int,
            gray: bool) -> np.ndarray:
    """One column of the figure as a single image in [0, 1]: the rows' H x W x C images (uint8,
    or floats in [0, 1]; None: a grey cell) stacked top to bottom, ``gap`` white pixels apart."""
    h, w = shape
    channels = () if gray else (3,)
    out = np.ones(((h + gap) * rows - gap, w, *channels), np.float32)
    for k in range(rows):
        cell = out[k * (h + gap):k * (h + gap) + h]
        if images[k] is None:
            cell[...] = NO_IMAGE_GREY
        else:
            image = np.asarray(images[k])
            unit = image / np.float32(255.0) if image.dtype == np.uint8 else image
            cell[...] = unit[..., 0] if gray else np.broadcast_to(unit, cell.shape)
    return out


def draw_preview(clean: list[np.ndarray | None], unlearnable: list[np.ndarray | None],
                 deltas: np.ndarray, counts: list[int], epsilon: float, *, gray: bool = False,
                 dataset: str | None = None, max_rows: int = PREVIEW_MAX_ROWS) -> Preview:
    """The preview figure from plain arrays, one row per cluster k < ``max_rows``.

    ``counts[k]``: cluster k's number of images (``len(counts)`` is K); ``clean[k]`` and
    ``unlearnable[k]``: an image of cluster k as uint8 H x W x C, or None when it is empty;
    ``deltas``: K x C x H x W (or its first rows), C = 3 or 1 (gray).

    Each column is one image (the rows stacked), so the cost hardly grows with K: three axes,
    not three a row.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    rows = min(len(counts), max_rows)
    if rows == 0:
        raise ValueError("a preview needs one cluster at least")
    if len(clean) < rows or len(unlearnable) < rows or len(deltas) < rows:
        raise ValueError(f"{rows} rows need {rows} clean and unlearnable images and deltas, "
                         f"got {len(clean)}, {len(unlearnable)} and {len(deltas)}")
    labels, columns = preview_labels(counts, max_rows), preview_columns(epsilon)
    title = preview_title(epsilon, len(counts), dataset, max_rows)
    full = int(deltas.shape[-2])
    # inches at 100 dpi: a cell of about 128 px (80 px past 16 rows), a whole number of screen
    # pixels an image pixel when it can be (a 16 px image is drawn 8 times), 224 px at most
    target, largest = (128, 224) if rows <= 16 else (80, 96)
    cell = min(full * max(1, round(target / full)), largest) / 100
    # an image larger than its cell is thinned first (as nearest-neighbour drawing would):
    # less to draw and to compress
    step = math.ceil(full / (cell * 100))
    thin = [None if x is None else np.asarray(x)[::step, ::step] for x in (*clean, *unlearnable)]
    amplified = np.clip(np.asarray(deltas[:rows, :, ::step, ::step], np.float32)
                        / (2 * epsilon) + 0.5, 0.0, 1.0)
    h, w = shape = amplified.shape[-2:]
    gap = max(1, round(0.1 * h))
    cells = [_column(thin[:len(clean)], rows, shape, gap, gray),
             _column(thin[len(clean):], rows, shape, gap, gray),
             _column(list(amplified.transpose(0, 2, 3, 1)), rows, shape, gap,
                     gray=amplified.shape[1] == 1)]
    span = cell * (h + gap) / h  # a row and the gap below it
    between, left, right, top, bottom = 0.25, 1.75, 0.15, 1.05, 0.1
    content = left + 3 * cell * w / h + 2 * between + right
    width = max(content, 5.6)  # room for the title; the columns are centred in the rest
    left += (width - content) / 2
    height = top + span * rows - (span - cell) + bottom
    fig = plt.figure(figsize=(width, height), dpi=100)
    try:
        fig.suptitle(title, x=0.1 / width, y=1 - 0.08 / height, ha="left", va="top",
                     fontsize=8.5, linespacing=1.3)
        axes = []
        for j, (data, name) in enumerate(zip(cells, columns, strict=True)):
            x = left + j * (cell * w / h + between)
            ax = fig.add_axes((x / width, bottom / height, cell * w / h / width,
                               (height - top - bottom) / height))
            ax.imshow(data, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest",
                      aspect="equal")
            ax.set_title(name, fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.spines[:].set_visible(False)
            for k in range(rows):
                y = k * (h + gap) - 0.5
                ax.add_patch(Rectangle((-0.5, y), w, h, fill=False, linewidth=0.8,
                                       edgecolor="0.35", clip_on=False))
                if j < 2 and (clean, unlearnable)[j][k] is None:
                    ax.text((w - 1) / 2, y + h / 2, "no image", ha="center", va="center",
                            fontsize=8, color="0.3")
            axes.append(ax)
        axes[0].set_yticks([k * (h + gap) + (h - 1) / 2 for k in range(rows)], labels,
                           fontsize=9)
        axes[0].tick_params(axis="y", length=0)
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=100)
        return Preview(buffer.getvalue(), tuple(int(v) for v in fig.canvas.get_width_height()),
                       fig.texts[0].get_text(), [ax.get_title() for ax in axes],
                       [t.get_text() for t in axes[0].get_yticklabels()])
    finally:
        plt.close(fig)


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
                  clusters: Clusters, epsilon: float) -> None:
    """preview.png: one row per cluster (the first PREVIEW_MAX_ROWS), labelled with its size:
    its first image clean, the same image unlearnable, and its perturbation amplified."""
    k = clusters.num_clusters
    assignments = clusters.assignments.cpu().numpy()
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
