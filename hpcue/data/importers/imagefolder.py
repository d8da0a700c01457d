"""Users' own data: one subfolder per class.

Either ``<root>/<split>/<class>/<image>`` for splits among train, val, test, or
``<root>/<class>/<image>``, which becomes train plus a seeded, stratified test hold-out.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hpcue.data.arrays import ImageArrays
from hpcue.data.images import decode_all
from hpcue.data.importers.base import Importer
from hpcue.data.options import PrepareOptions
from hpcue.errors import InputError, MissingInputError

EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".tif", ".tiff", ".webp")
SPLIT_NAMES = ("train", "val", "test")


def _scan(folder: Path) -> tuple[list[str], list[Path], list[int]]:
    classes = sorted(d.name for d in folder.iterdir() if d.is_dir())
    if not classes:
        raise MissingInputError(f"{folder}: no class subfolders")
    paths, labels = [], []
    for label, name in enumerate(classes):
        files = sorted(p for p in (folder / name).iterdir() if p.suffix.lower() in EXTENSIONS)
        paths += files
        labels += [label] * len(files)
    if not paths:
        raise InputError(f"{folder}: class folders hold no images ({', '.join(EXTENSIONS)})")
    return classes, paths, labels


def _names(root: Path, paths: list[Path]) -> list[str]:
    """Each file's path under root, the name ``hpcue export --format same-as-source`` keeps."""
    return [p.relative_to(root).as_posix() for p in paths]


def load(root: Path, image_size: int, opts: PrepareOptions) -> dict[str, ImageArrays]:
    root = Path(root)
    if not root.is_dir():
        raise MissingInputError(f"{root}: image folder not found")
    split_dirs = [s for s in SPLIT_NAMES if (root / s).is_dir()]
    if split_dirs:
        scans = {s: _scan(root / s) for s in split_dirs}
        classes = scans[split_dirs[0]][0]
        for s, (names, _, _) in scans.items():
            if names != classes:
                raise InputError(f"{root / s}: classes {names} differ from "
                                 f"{root / split_dirs[0]}: {classes}")
        return {s: ImageArrays(decode_all(p, image_size, f"imagefolder {s}"),
                               np.array(lab, np.int64), classes, _names(root, p))
                for s, (_, p, lab) in scans.items()}
    from sklearn.model_selection import train_test_split

    classes, paths, labels = _scan(root)
    idx = np.arange(len(paths))
    try:
        tr, te = train_test_split(idx, test_size=opts.test_fraction, random_state=opts.seed,
                                  stratify=labels if min(np.bincount(labels)) > 1 else None)
    except ValueError as exc:  # too few images for the fraction, or for one of each class
        raise InputError(f"{root}: {len(paths)} images in {len(classes)} classes cannot be split "
                         f"with test fraction {opts.test_fraction} ({exc})") from None
    images = decode_all(paths, image_size, "imagefolder")
    lab = np.array(labels, np.int64)
    names = _names(root, paths)
    return {split: ImageArrays(images[np.sort(ids)], lab[np.sort(ids)], classes,
                               [names[i] for i in np.sort(ids)])
            for split, ids in (("train", tr), ("test", te))}


IMPORTER = Importer("imagefolder", SPLIT_NAMES, needs_root=True, load=load)
