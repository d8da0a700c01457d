"""MedMNIST 2D data sets from the official ``.npz`` (``<flag>.npz`` or ``<flag>_<size>.npz``)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from hpcue.data.arrays import ImageArrays, gray_to_rgb, resize_uint8

SPLITS = ("train", "val", "test")


def medmnist_flags() -> list[str]:
    """Every 2D flag medmnist knows (3D volumes are not images)."""
    from medmnist import INFO

    return sorted(flag for flag in INFO if not flag.endswith("3d"))


def npz_path(root: Path, flag: str, size: int = 28) -> Path:
    candidates = [root / f"{flag}_{size}.npz"] + ([root / f"{flag}.npz"] if size == 28 else [])
    for path in candidates:
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"MedMNIST file for {flag!r} at size {size} not found: looked for "
        + ", ".join(str(p) for p in candidates)
        + " (place the official .npz there, or prepare with --download)"
    )


def load_medmnist_split(path: Path, flag: str, split: str, image_size: int) -> ImageArrays:
    """Read ``<split>_images``/``<split>_labels`` from the npz, as 8-bit RGB at image_size."""
    from medmnist import INFO

    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r} for {flag}: expected one of {SPLITS}")
    try:
        with np.load(path, allow_pickle=False) as npz:
            keys = set(npz.files)
            want = {f"{split}_images", f"{split}_labels"}
            if not want <= keys:
                raise ValueError(
                    f"{path}: missing keys {sorted(want - keys)} (has {sorted(keys)})"
                )
            images = npz[f"{split}_images"]
            labels = npz[f"{split}_labels"]
    except (zipfile.BadZipFile, EOFError, OSError) as exc:
        raise ValueError(f"{path}: not a readable .npz file ({exc})") from exc
    if images.dtype == object or images.ndim not in (3, 4):
        raise ValueError(
            f"{path}: {split}_images must be N x H x W[ x C], got shape {images.shape}")
    if len(images) == 0:
        raise ValueError(f"{path}: split {split!r} is empty")
    labels = np.asarray(labels).reshape(len(labels), -1)[:, 0].astype(np.int64)
    classes = [INFO[flag]["label"][k] for k in sorted(INFO[flag]["label"], key=int)]
    if labels.min() < 0 or labels.max() >= len(classes):
        raise ValueError(
            f"{path}: {split}_labels outside 0..{len(classes) - 1} "
            f"(min {labels.min()}, max {labels.max()})"
        )
    images = resize_uint8(gray_to_rgb(images.astype(np.uint8)), image_size)
    return ImageArrays(images, labels, classes)
