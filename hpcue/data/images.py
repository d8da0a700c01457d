"""Decoding image files into the 8-bit arrays every importer returns."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hpcue.data.arrays import resize_uint8
from hpcue.errors import InputError, MissingInputError


def decode(path: Path, image_size: int) -> np.ndarray:
    """One RGB image, resized (short side) and center-cropped to image_size, as H x W x 3 uint8."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            rgb = np.asarray(img.convert("RGB"))
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise InputError(f"{path}: not a readable image ({exc})") from None
    return resize_uint8(rgb[None], image_size)[0]


def decode_all(paths: list[Path], image_size: int, desc: str) -> np.ndarray:
    from tqdm import tqdm

    out = np.empty((len(paths), image_size, image_size, 3), np.uint8)
    for i, path in enumerate(tqdm(paths, desc=desc, leave=False, mininterval=2)):
        out[i] = decode(path, image_size)
    return out


def require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise MissingInputError(f"{path}: missing ({what})")
    return path
