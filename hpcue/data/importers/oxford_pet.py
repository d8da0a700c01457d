"""Oxford-IIIT Pet in torchvision's on-disk layout, 37 classes.

    <root>/oxford-iiit-pet/images/<Name>_<n>.jpg
    <root>/oxford-iiit-pet/annotations/trainval.txt, test.txt   lines: "<image> <class 1..37> ..."
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hpcue.data.arrays import ImageArrays
from hpcue.data.images import decode_all, require_file
from hpcue.data.importers.base import Importer
from hpcue.data.options import PrepareOptions
from hpcue.errors import InputError, MissingInputError

SPLITS = {"train": "trainval.txt", "test": "test.txt"}
NUM_CLASSES = 37


def _read_list(path: Path) -> list[tuple[str, int]]:
    rows = []
    for n, line in enumerate(require_file(path, "Oxford-IIIT Pet split list").read_text()
                             .splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split()
        try:
            rows.append((parts[0], int(parts[1]) - 1))
        except (IndexError, ValueError):
            raise InputError(
                f"{path}:{n}: expected '<image> <class id> ...', got {line!r}") from None
    return rows


def _class_name(image_id: str) -> str:
    return " ".join(part.title() for part in image_id.rsplit("_", 1)[0].split("_"))


def load(root: Path, image_size: int, opts: PrepareOptions) -> dict[str, ImageArrays]:
    root = Path(root)
    base = root / "oxford-iiit-pet"
    if not (base / "images").is_dir():
        raise MissingInputError(f"{base / 'images'}: missing (expected torchvision's "
                                f"oxford-iiit-pet layout under {root})")
    lists = {split: _read_list(base / "annotations" / name) for split, name in SPLITS.items()}
    names: dict[int, str] = {}
    for rows in lists.values():
        for image_id, label in rows:
            names.setdefault(label, _class_name(image_id))
    out = {}
    for split, rows in lists.items():
        if not rows:
            raise InputError(f"{base / 'annotations' / SPLITS[split]}: split {split!r} is empty")
        labels = np.array([label for _, label in rows], np.int64)
        if labels.min() < 0 or labels.max() >= NUM_CLASSES:
            raise InputError(f"{base / 'annotations' / SPLITS[split]}: class ids outside "
                             f"1..{NUM_CLASSES}")
        paths = [require_file(base / "images" / f"{image_id}.jpg", "listed image")
                 for image_id, _ in rows]
        images = decode_all(paths, image_size, f"oxford-iiit-pet {split}")
        classes = [names.get(i, f"class_{i}") for i in range(NUM_CLASSES)]
        out[split] = ImageArrays(images, labels, classes,
                                 [p.relative_to(root).as_posix() for p in paths])
    return out


IMPORTER = Importer("oxford-iiit-pet", tuple(SPLITS), needs_root=True, load=load,
                    train_size=3680)  # trainval
