"""Data set names, and which importer reads each one."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path

from hpcue.data.arrays import ImageArrays

FIXED_NAMES = ("digits", "oxford-iiit-pet", "flowers102", "imagefolder")
MEDMNIST_PREFIX = "medmnist:"

Importer = Callable[[Path | None, int, object], dict[str, ImageArrays]]


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


def importer(name: str) -> Importer:
    check_dataset_name(name)
    if name.startswith(MEDMNIST_PREFIX):
        from hpcue.data.importers import medmnist_npz

        return partial(medmnist_npz.load, flag=name.removeprefix(MEDMNIST_PREFIX))
    from hpcue.data.importers import digits, flowers102, imagefolder, oxford_pet

    return {"digits": digits.load, "oxford-iiit-pet": oxford_pet.load,
            "flowers102": flowers102.load, "imagefolder": imagefolder.load}[name]
