"""Decoding image files into the 8-bit arrays every importer returns."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from hpcue import console
from hpcue.errors import InputError, MissingInputError

#: the most pixels an image file may declare (PIL's own default bound): decoding a larger one,
#: a decompression bomb or not a photo a model takes, could exhaust memory
MAX_PIXELS = 89_478_485


def _bomb(path: Path, detail: str) -> InputError:
    return InputError(f"{path}: {detail}; an image may have at most {MAX_PIXELS} pixels (this "
                      f"is a decompression bomb, or not a photo): scale it down or remove it")


def decode(path: Path, image_size: int) -> np.ndarray:
    """One RGB image, resized (short side) and center-cropped to image_size, as H x W x 3 uint8.

    The declared size is checked against MAX_PIXELS before any pixel is decoded.
    """
    from PIL import Image, UnidentifiedImageError

    from hpcue.data.tensors import resize_uint8  # torch on decoding only: importers import this

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                width, height = img.size
                if width * height > MAX_PIXELS:
                    raise _bomb(path, f"{width} x {height} pixels")
                rgb = np.asarray(img.convert("RGB"))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _bomb(path, f"refused by PIL ({exc})") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise InputError(f"{path}: not a readable image ({exc})") from None
    return resize_uint8(rgb[None], image_size)[0]


def decode_all(paths: list[Path], image_size: int, desc: str) -> np.ndarray:
    from tqdm import tqdm

    out = np.empty((len(paths), image_size, image_size, 3), np.uint8)
    for i, path in enumerate(tqdm(paths, desc=desc, leave=False, mininterval=2,
                                      disable=console.bars_off())):
        out[i] = decode(path, image_size)
    return out


def require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise MissingInputError(f"{path}: missing ({what})")
    return path
