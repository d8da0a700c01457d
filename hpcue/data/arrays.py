"""Image arrays: the in-memory form every importer returns and every stage consumes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from hpcue.errors import InputError


@dataclass
class ImageArrays:
    """One split: ``images`` uint8 N x H x W x C (C = 3), ``labels`` int64 N, class names.

    Labels are checked here, where every importer's output passes: integers (a float label
    would be truncated silently) in 0..len(classes)-1 (one out of range crashes the loss
    function epochs later).

    ``names``: where each image came from, relative to the raw data set's root (a file path,
    POSIX; ``<file>.npz:<key>[<row>]`` for a row of an array file), or None where the data has
    no files (digits). ``prepare`` keeps them (``sources.json``) so that ``hpcue export`` can
    write a protected set under the source's own names.
    """

    images: np.ndarray
    labels: np.ndarray
    classes: list[str]
    names: list[str] | None = None

    def __post_init__(self) -> None:
        if self.images.dtype != np.uint8 or self.images.ndim != 4 or self.images.shape[-1] != 3:
            raise InputError(
                f"images must be uint8 N x H x W x 3, got {self.images.dtype} {self.images.shape}"
            )
        if len(self.images) != len(self.labels):
            raise InputError(f"{len(self.images)} images but {len(self.labels)} labels")
        labels = np.asarray(self.labels)
        if labels.ndim != 1 or (labels.size and labels.dtype.kind not in "iu"):
            raise InputError(f"labels must be integers (N), got {labels.dtype} {labels.shape}")
        self.labels = labels.astype(np.int64, copy=False)
        if self.names is not None and len(self.names) != len(self.images):
            raise InputError(f"{len(self.images)} images but {len(self.names)} source names")
        if len(labels) and (self.labels.min() < 0 or self.labels.max() >= len(self.classes)):
            raise InputError(f"labels {self.labels.min()}..{self.labels.max()} outside "
                             f"0..{len(self.classes) - 1} ({len(self.classes)} classes)")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def as_float(self) -> torch.Tensor:
        """N x 3 x H x W float in [0, 1]."""
        return to_float(torch.from_numpy(self.images))


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """uint8 batch -> float in [0, 1]. Loaders yield uint8 (4x less to collate and to copy to
    the GPU); the conversion happens on the device, after the transfer."""
    return images.float().div_(255.0) if images.dtype == torch.uint8 else images


def to_float(images_nhwc_uint8: torch.Tensor) -> torch.Tensor:
    return images_nhwc_uint8.permute(0, 3, 1, 2).float().div_(255.0)


def to_uint8(images_nchw_float: torch.Tensor) -> np.ndarray:
    """Round [0, 1] floats to 8-bit NHWC, the form images are saved and published in."""
    scaled = images_nchw_float.clamp(0, 1).mul(255.0).round().to(torch.uint8)
    return scaled.permute(0, 2, 3, 1).contiguous().numpy()


#: float working memory of one resize step: a split is resized this much at a time (one image
#: at least), so 1797 digits at 1024 px need their uint8 result, not 22 GB of float32
RESIZE_CHUNK_BYTES = 64 << 20


def _resized(h: int, w: int, size: int) -> tuple[int, int]:
    scale = size / min(h, w)
    return max(size, round(h * scale)), max(size, round(w * scale))


def _resize_chunk(images: np.ndarray, size: int) -> np.ndarray:
    # a copy: the chunk may be a read-only view (a memory-mapped .npz), which torch warns about
    x = to_float(torch.tensor(images))
    nh, nw = _resized(*x.shape[-2:], size)
    x = F.interpolate(x, size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)
    top, left = (nh - size) // 2, (nw - size) // 2
    return to_uint8(x[..., top : top + size, left : left + size])


def resize_uint8(images: np.ndarray, size: int,
                 chunk_bytes: int = RESIZE_CHUNK_BYTES) -> np.ndarray:
    """Resize the short side to ``size`` (antialiased) and center-crop to size x size.

    Images are resized ``chunk_bytes`` of float work at a time into one uint8 result (each
    image is resized on its own, so chunking does not change a bit).
    """
    n, h, w, c = images.shape
    if h == size and w == size:
        return images
    nh, nw = _resized(h, w, size)
    per_image = 4 * c * (h * w + nh * nw + 2 * size * size)  # float in, resized, crop, rounded
    chunk = max(1, chunk_bytes // per_image)
    out = np.empty((n, size, size, c), np.uint8)
    for a in range(0, n, chunk):
        out[a : a + chunk] = _resize_chunk(images[a : a + chunk], size)
    return out


def is_gray(images: np.ndarray) -> bool:
    """Whether N x H x W x 3 images carry no colour (every pixel R == G == B)."""
    return bool((images[..., 0] == images[..., 1]).all() and
                (images[..., 1] == images[..., 2]).all())


def gray_to_rgb(images: np.ndarray) -> np.ndarray:
    """N x H x W (or N x H x W x 1) gray -> N x H x W x 3."""
    if images.ndim == 3:
        images = images[..., None]
    if images.shape[-1] == 1:
        images = np.repeat(images, 3, axis=-1)
    return np.ascontiguousarray(images)
