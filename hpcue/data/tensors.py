"""uint8 image arrays to and from float tensors, and resizing: the torch half of ``arrays.py``,
which stays torch-free (importers declare themselves through it)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


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
