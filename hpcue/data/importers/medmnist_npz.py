"""MedMNIST 2D data sets from the official ``.npz`` (``<flag>.npz`` or ``<flag>_<size>.npz``).

Keys ``train_images``, ``train_labels``, ``val_images`` ... ``test_labels``. Downloading happens
only when asked, and only through medmnist's own downloader.
"""

from __future__ import annotations

import importlib.util
import sys
import zipfile
from functools import cache, partial
from pathlib import Path
from typing import Any

import numpy as np

from hpcue.data.arrays import ImageArrays, gray_to_rgb
from hpcue.data.importers.base import Importer
from hpcue.data.options import PrepareOptions
from hpcue.errors import InputError, MissingInputError, did_you_mean

PREFIX = "medmnist:"  # a family: one data set per MedMNIST flag, "medmnist:<flag>"
SPLITS = ("train", "val", "test")
SIZES = (28, 64, 128, 224)


@cache
def _info() -> dict[str, dict[str, Any]]:
    """medmnist's table of data sets (``medmnist.info.INFO``), read from its own file: ``import
    medmnist`` loads its torch Dataset classes as well, and a flag is checked by config
    validation and ``hpcue sweep render``, which load no torch."""
    package = importlib.util.find_spec("medmnist")
    if "medmnist" in sys.modules or package is None or not package.submodule_search_locations:
        from medmnist import INFO  # loaded already, or not installed: its own error

        return INFO
    path = Path(package.submodule_search_locations[0]) / "info.py"
    spec = importlib.util.spec_from_file_location("_hpcue_medmnist_info", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.INFO


def medmnist_flags() -> list[str]:
    """Every 2D flag medmnist knows (3D volumes are not images)."""
    return sorted(flag for flag in _info() if not flag.endswith("3d"))


def npz_path(root: Path, flag: str, size: int = 28) -> Path:
    candidates = [root / f"{flag}_{size}.npz"] + ([root / f"{flag}.npz"] if size == 28 else [])
    for path in candidates:
        if path.is_file():
            return path
    raise MissingInputError(
        f"MedMNIST file for {flag!r} at size {size} not found: looked for "
        + ", ".join(str(p) for p in candidates)
        + " (place the official .npz there, or prepare with --download)"
    )


def download(root: Path, flag: str, size: int) -> None:
    """medmnist's own downloader: fetches ``<flag>[_<size>].npz`` into root."""
    import medmnist
    from medmnist import INFO

    root.mkdir(parents=True, exist_ok=True)
    getattr(medmnist, INFO[flag]["python_class"])(split="train", root=str(root), size=size,
                                                   download=True)


def row_names(file: str, split: str, n: int) -> list[str]:
    """``<file>:<split>_images[<row>]``: where each image of a split sits in its .npz."""
    return [f"{file}:{split}_images[{i}]" for i in range(n)]


def load_medmnist_split(path: Path, flag: str, split: str, image_size: int) -> ImageArrays:
    """Read ``<split>_images``/``<split>_labels`` from the npz, as 8-bit RGB at image_size."""
    from medmnist import INFO

    if split not in SPLITS:
        raise InputError(f"unknown split {split!r} for {flag}: expected one of {SPLITS}")
    try:
        with np.load(path, allow_pickle=False) as npz:
            keys = set(npz.files)
            want = {f"{split}_images", f"{split}_labels"}
            if not want <= keys:
                raise InputError(f"{path}: missing keys {sorted(want - keys)} (has {sorted(keys)})")
            images = npz[f"{split}_images"]
            labels = npz[f"{split}_labels"]
    except ValueError as exc:
        if isinstance(exc, InputError):
            raise
        if "allow_pickle" in str(exc):
            raise InputError(f"{path}: {split}_images holds images of mixed shapes "
                             f"(an object array), expected one N x H x W[ x C] array") from None
        raise InputError(f"{path}: not a readable .npz file ({exc})") from None
    except (zipfile.BadZipFile, EOFError, OSError) as exc:
        raise InputError(f"{path}: not a readable .npz file ({exc})") from None
    if images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[-1] not in (1, 3)):
        raise InputError(f"{path}: {split}_images must be N x H x W[ x C], got {images.shape}")
    if len(images) == 0:
        raise InputError(f"{path}: split {split!r} is empty")
    if len(labels) != len(images):
        raise InputError(f"{path}: {len(images)} {split}_images but {len(labels)} labels")
    labels = np.asarray(labels).reshape(len(labels), -1)[:, 0]
    if labels.size and labels.dtype.kind not in "iu":  # casting 0.5 to 0 would hide it
        raise InputError(f"{path}: {split}_labels must be integers, got {labels.dtype}")
    labels = labels.astype(np.int64)
    classes = [INFO[flag]["label"][k] for k in sorted(INFO[flag]["label"], key=int)]
    if labels.min() < 0 or labels.max() >= len(classes):
        raise InputError(f"{path}: {split}_labels outside 0..{len(classes) - 1} "
                         f"(min {labels.min()}, max {labels.max()})")
    # torch on loading only: the registry reads this module torch-free
    from hpcue.data.tensors import resize_uint8

    images = resize_uint8(gray_to_rgb(images.astype(np.uint8)), image_size)
    return ImageArrays(images, labels, classes, row_names(path.name, split, len(images)))


def load(root: Path, image_size: int, opts: PrepareOptions,
         flag: str) -> dict[str, ImageArrays]:
    if root is None:
        raise InputError(f"medmnist:{flag} needs --root, the folder holding {flag}_<size>.npz")
    root = Path(root)
    size = opts.size if opts.size is not None else next((s for s in SIZES if s >= image_size), 224)
    if size not in SIZES:
        raise InputError(f"MedMNIST size must be one of {SIZES}, got {size}")
    if opts.download:
        download(root, flag, size)
    elif not root.is_dir():
        raise MissingInputError(f"{root}: MedMNIST root folder not found")
    path = npz_path(root, flag, size)
    return {split: load_medmnist_split(path, flag, split, image_size) for split in SPLITS}


def importer_for(name: str) -> Importer:
    """The importer of ``medmnist:<flag>``; an unknown flag lists the ones medmnist knows."""
    flag = name.removeprefix(PREFIX)
    if flag not in medmnist_flags():
        raise InputError(
            f"unknown MedMNIST flag {flag!r}: expected one of {', '.join(medmnist_flags())}"
            f"{did_you_mean(flag, medmnist_flags())}"
        )
    return Importer(name, SPLITS, needs_root=True, load=partial(load, flag=flag))
