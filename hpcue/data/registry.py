"""Data set names, and which importer reads each one (each importer declares its own name)."""

from __future__ import annotations

from hpcue.data.importers import digits, flowers102, imagefolder, medmnist_npz, oxford_pet
from hpcue.data.importers.base import Importer
from hpcue.errors import InputError, did_you_mean

IMPORTERS: dict[str, Importer] = {
    imp.name: imp for imp in (digits.IMPORTER, oxford_pet.IMPORTER, flowers102.IMPORTER,
                              imagefolder.IMPORTER)
}
FIXED_NAMES = tuple(IMPORTERS)
MEDMNIST_PREFIX = medmnist_npz.PREFIX


def importer(name: str) -> Importer:
    """The importer of ``name``; an unknown name is an error listing the ones that exist."""
    if name in IMPORTERS:
        return IMPORTERS[name]
    if name.startswith(MEDMNIST_PREFIX):
        return medmnist_npz.importer_for(name)
    raise InputError(
        f"unknown data set {name!r}: expected one of {', '.join(FIXED_NAMES)}, "
        f"or {MEDMNIST_PREFIX}<flag>{did_you_mean(name, FIXED_NAMES)}"
    )


def check_dataset_name(name: str) -> None:
    """Reject unknown names at config load, listing the ones that exist."""
    importer(name)
