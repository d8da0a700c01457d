"""Image arrays: the in-memory form every importer returns and every stage consumes.

numpy only: an importer declares itself (name, splits, size) through this module, and config
validation and ``hpcue sweep render`` read those declarations without torch. The conversions
to and from torch tensors, and resizing, are in ``tensors.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from hpcue.errors import InputError

if TYPE_CHECKING:
    import torch


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
        import torch  # only here: the module itself stays torch-free

        from hpcue.data.tensors import to_float

        return to_float(torch.from_numpy(self.images))


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
