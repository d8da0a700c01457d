"""scikit-learn's ``load_digits``: the embedded default, real data that ships with the package."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from hpcue.data.arrays import ImageArrays, gray_to_rgb
from hpcue.data.importers.base import Importer
from hpcue.data.options import PrepareOptions
from hpcue.errors import InputError

SPLITS = ("train", "test")
NUM_IMAGES = 1797  # scikit-learn's load_digits


def load_digits_splits(image_size: int, test_fraction: float, seed: int) -> dict[str, ImageArrays]:
    """8 x 8 digits (values 0..16) -> 8-bit RGB at image_size, stratified train/test split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    # torch on loading only: the registry reads this module torch-free
    from hpcue.data.tensors import resize_uint8

    bunch = load_digits()
    images = gray_to_rgb(np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8))
    labels = bunch.target.astype(np.int64)
    try:
        idx_train, idx_test = train_test_split(
            np.arange(len(labels)), test_size=test_fraction, random_state=seed, stratify=labels
        )
    except ValueError as exc:  # too few test images for one of each class, or too many
        raise InputError(f"digits ({len(labels)} images, {len(bunch.target_names)} classes): "
                         f"test fraction {test_fraction} cannot split it ({exc})") from None
    classes = [str(c) for c in bunch.target_names]
    # each split resized on its own: the resized set exists once, never copied by indexing
    return {split: ImageArrays(resize_uint8(images[np.sort(idx)], image_size),
                               labels[np.sort(idx)], classes)
            for split, idx in (("train", idx_train), ("test", idx_test))}


def train_size(test_fraction: float) -> int:
    """Training images for a test fraction, without loading them (scikit-learn rounds the test
    part up)."""
    return NUM_IMAGES - math.ceil(test_fraction * NUM_IMAGES)


def load(root: Path | None, image_size: int, opts: PrepareOptions) -> dict[str, ImageArrays]:
    return load_digits_splits(image_size, opts.test_fraction, opts.seed)


IMPORTER = Importer("digits", SPLITS, needs_root=False, load=load, augment="crop")
