"""preview.png: one labelled row per cluster (empty ones too), titled columns, a valid PNG."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hpcue.data.meta_io import write_meta
from hpcue.data.shard_set import open_shards
from hpcue.data.shards import write_split
from hpcue.figures.preview import PREVIEW_MAX_ROWS, draw_preview
from hpcue.stages import generate
from hpcue.stages.artifacts import Clusters
from hpcue.stages.generate import read_images, write_preview

PNG = b"\x89PNG\r\n\x1a\n"


def _images(n: int, size: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def _png_size(blob: bytes) -> tuple[int, int]:
    assert blob[:8] == PNG
    with Image.open(io.BytesIO(blob)) as image:
        image.verify()
        return image.size


def test_one_row_per_cluster_empty_ones_included():
    counts = [3, 1, 0, 5]  # cluster 2 is empty: it still has a row, with its perturbation
    eps = 8 / 255
    images = list(_images(4))
    clean = [None if n == 0 else img for n, img in zip(counts, images, strict=True)]
    deltas = np.random.default_rng(1).uniform(-eps, eps, (4, 3, 8, 8)).astype(np.float32)
    preview = draw_preview(clean, clean, deltas, counts, eps, dataset="cifar10")
    assert preview.labels == ["cluster 0 (3 images)", "cluster 1 (1 image)",
                              "cluster 2 (0 images)", "cluster 3 (5 images)"]
    assert preview.columns[:2] == ["clean", "unlearnable"]
    # delta / (2 eps) + 0.5: [-8/255, 8/255] -> [0, 1], amplified 255 / 16 = 15.9 times
    assert preview.columns[2] == "perturbation × 15.9"
    assert "ε = 8/255" in preview.title and "K = 4" in preview.title
    assert "perturbation × 15.9 (±8/255 → full range, grey = no change)" in preview.title
    assert "cifar10" in preview.title and "clusters shown" not in preview.title
    assert _png_size(preview.png) == preview.size


def test_the_perturbation_column_has_a_key_that_shows_where_grey_is():
    # UC's perturbations sit near their bound: drawn amplified, black, white and colours, no
    # grey; the key below the column draws the whole range, grey at no change, and says so
    eps = 8 / 255
    signs = np.random.default_rng(2).choice([-1.0, 1.0], (2, 3, 8, 8))
    preview = draw_preview(list(_images(2)), list(_images(2)), (signs * eps).astype(np.float32),
                           [1, 1], eps)
    *ticks, caption = preview.key
    assert ticks == ["−ε", "0", "+ε"] and "ε = 8/255" in preview.title
    assert "grey = no change" in caption and "a colour = channels changed unequally" in caption
    assert _png_size(preview.png) == preview.size


def test_many_clusters_show_the_first_64_and_say_so():
    k = PREVIEW_MAX_ROWS + 6
    counts = [2] * k
    counts[5] = 0
    gray = [img[..., :1].repeat(3, -1) for img in _images(PREVIEW_MAX_ROWS, size=4)]
    clean = [None if counts[i] == 0 else img for i, img in enumerate(gray)]
    deltas = np.zeros((PREVIEW_MAX_ROWS, 1, 4, 4), np.float32)  # gray: one channel
    preview = draw_preview(clean, clean, deltas, counts, 16 / 255, gray=True)
    assert len(preview.labels) == PREVIEW_MAX_ROWS
    assert preview.labels[5] == "cluster 5 (0 images)"
    assert preview.labels[-1] == f"cluster {PREVIEW_MAX_ROWS - 1} (2 images)"
    assert f"first {PREVIEW_MAX_ROWS} of {k} clusters" in preview.title
    assert "ε = 16/255" in preview.title and f"K = {k}" in preview.title
    assert preview.columns == ["clean", "unlearnable", "perturbation × 7.97"]  # 255 / 32
    width, height = _png_size(preview.png)
    assert width < 1000 and height < 8000  # bounded, however large K is


def _shard_set(root: Path, images: np.ndarray, gray: bool = False):
    labels = np.arange(len(images)) % 2
    infos = write_split(root, "train", images, labels, num_shards=2)
    write_meta(root, "fake", ["a", "b"], images.shape[1:], {"train": infos},
               {"grayscale": gray})
    return open_shards(root)


def test_read_images_by_global_id_across_shards(tmp_path):
    images = _images(6)
    shards = _shard_set(tmp_path / "data", images)
    got = read_images(shards, [0, 4, 5])
    assert sorted(got) == [0, 4, 5]
    for i, image in got.items():
        np.testing.assert_array_equal(image, images[i])


def test_write_preview_from_shard_sets(tmp_path, monkeypatch):
    clean_images = _images(6)
    unlearnable_images = 255 - clean_images
    clean = _shard_set(tmp_path / "data", clean_images)
    unlearnable = _shard_set(tmp_path / "unlearnable", unlearnable_images)
    # cluster 1 is empty; cluster 2's first image (id 4) lies in the second shard
    clusters = Clusters(torch.zeros(3, 2), torch.tensor([0, 0, 0, 0, 2, 0]))
    eps = 8 / 255
    deltas = torch.full((3, 3, 8, 8), eps / 2)
    seen = {}

    def spy(*args, **kwargs):
        seen["args"], seen["kwargs"] = args, kwargs
        seen["preview"] = draw(*args, **kwargs)
        return seen["preview"]

    draw = generate.draw_preview
    monkeypatch.setattr(generate, "draw_preview", spy)
    out = tmp_path / "run" / "preview.png"
    write_preview(out, clean, unlearnable, deltas, clusters.assignments, eps)
    shown_clean, shown_unlearnable, _, counts, _ = seen["args"]
    assert counts == [5, 0, 1]
    np.testing.assert_array_equal(shown_clean[0], clean_images[0])
    np.testing.assert_array_equal(shown_unlearnable[2], unlearnable_images[4])
    assert shown_clean[1] is None and shown_unlearnable[1] is None
    assert seen["preview"].labels == ["cluster 0 (5 images)", "cluster 1 (0 images)",
                                      "cluster 2 (1 image)"]
    assert not seen["kwargs"]["gray"]
    assert out.read_bytes() == seen["preview"].png
    assert _png_size(out.read_bytes()) == seen["preview"].size
    assert [p.name for p in out.parent.iterdir()] == ["preview.png"]  # no temporary left


def test_no_cluster_is_refused():
    with pytest.raises(ValueError, match="one cluster"):
        draw_preview([], [], np.zeros((0, 3, 4, 4)), [], 8 / 255)
