"""Data set names the configs accept, and the one function that loads a split for a stage."""

from __future__ import annotations

from typing import TYPE_CHECKING

from hpcue.data.arrays import ImageArrays

if TYPE_CHECKING:
    from hpcue.config import DataConfig

FIXED_NAMES = ("digits",)
MEDMNIST_PREFIX = "medmnist:"


def check_dataset_name(name: str) -> None:
    """Reject unknown names at config load, listing the ones that exist."""
    if name in FIXED_NAMES:
        return
    if name.startswith(MEDMNIST_PREFIX):
        from hpcue.data.importers.medmnist_npz import medmnist_flags

        flag = name.removeprefix(MEDMNIST_PREFIX)
        if flag not in medmnist_flags():
            raise ValueError(
                f"unknown MedMNIST flag {flag!r}: expected one of {', '.join(medmnist_flags())}"
            )
        return
    raise ValueError(
        f"unknown data set {name!r}: expected one of {', '.join(FIXED_NAMES)}, "
        f"or {MEDMNIST_PREFIX}<flag>"
    )


def load_splits(cfg: DataConfig, seed: int) -> dict[str, ImageArrays]:
    """Train and test ImageArrays at cfg.image_size."""
    if cfg.dataset == "digits":
        from hpcue.data.importers.digits import load_digits_splits

        return load_digits_splits(cfg.image_size, cfg.test_fraction, seed)
    if cfg.dataset.startswith(MEDMNIST_PREFIX):
        from hpcue.data.importers.medmnist_npz import load_medmnist_split, npz_path

        if cfg.root is None:
            raise ValueError(f"data.root must name the folder holding the {cfg.dataset} .npz")
        flag = cfg.dataset.removeprefix(MEDMNIST_PREFIX)
        size = min((s for s in (28, 64, 128, 224) if s >= cfg.image_size), default=224)
        try:
            path = npz_path(cfg.root, flag, size)
        except FileNotFoundError:
            path = npz_path(cfg.root, flag, 28)
        return {split: load_medmnist_split(path, flag, split, cfg.image_size)
                for split in ("train", "test")}
    raise ValueError(f"no loader for data set {cfg.dataset!r}")
