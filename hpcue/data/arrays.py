"""Image arrays: the in-memory form every importer returns and every stage consumes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from hpcue.errors import InputError


@dataclass
class ImageArrays:
    """One split: ``images`` uint8 N x H x W x C (C = 3), ``labels`` int64 N, class names."""

    images: np.ndarray
    labels: np.ndarray
    classes: list[str]

    def __post_init__(self) -> None:
        if self.images.dtype != np.uint8 or self.images.ndim != 4 or self.images.shape[-1] != 3:
            raise InputError(
                f"images must be uint8 N x H x W x 3, got {self.images.dtype} {self.images.shape}"
            )
        if len(self.images) != len(self.labels):
            raise InputError(f"{len(self.images)} images but {len(self.labels)} labels")
        self.labels = np.asarray(self.labels, dtype=np.int64)

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


def resize_uint8(images: np.ndarray, size: int) -> np.ndarray:
    """Resize the short side to ``size`` (antialiased) and center-crop to size x size."""
    if images.shape[1] == size and images.shape[2] == size:
        return images
    x = to_float(torch.from_numpy(images))
    h, w = x.shape[-2:]
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    x = F.interpolate(x, size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)
    top, left = (nh - size) // 2, (nw - size) // 2
    return to_uint8(x[..., top : top + size, left : left + size])


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
