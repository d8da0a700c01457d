"""What an importer declares about itself: its name, its splits, whether it needs ``--root``, and
the training augmentation that suits its images."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hpcue.data.arrays import ImageArrays
from hpcue.data.options import PrepareOptions

Load = Callable[[Path | None, int, PrepareOptions], dict[str, ImageArrays]]


@dataclass(frozen=True)
class Importer:
    """One raw data set: ``load(root, image_size, options)`` returns its splits in memory."""

    name: str
    splits: tuple[str, ...]   # the splits it can produce
    needs_root: bool          # whether the raw files must be named with --root (data.root)
    load: Load
    #: ``data.augment: auto`` resolves to this: random crops and horizontal flips suit photos;
    #: a flipped digit is another symbol, so digits get crops only
    augment: str = "crop_flip"
    #: training images of the official split, where the data set fixes it (sweeps check
    #: batches against it before anything is prepared)
    train_size: int | None = None
