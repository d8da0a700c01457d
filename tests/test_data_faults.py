"""Nothing lost, nothing injected: a shard directory or raw input that cannot be trusted is one
named error, never a traceback, a file written outside the directory, or a damaged shard kept."""

import errno
import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

from hpcue.data import images as images_module
from hpcue.data import shards as shards_module
from hpcue.data import tensors as arrays_module
from hpcue.data.arrays import ImageArrays
from hpcue.data.importers.base import Importer
from hpcue.data.loader import ShardDataset
from hpcue.data.prepare import PrepareOptions, prepare
from hpcue.data.registry import IMPORTERS, importer
from hpcue.data.shard_set import open_shards
from hpcue.data.shards import ShardError, shard_bytes, write_shard
from hpcue.data.tensors import resize_uint8
from hpcue.data.verify import verify
from hpcue.errors import InputError
from hpcue.io import file_sha256
from tests import fabricate
from tests.conftest import REPO, hpcue
from tests.fabricate import edit_meta, rewrite_shard

SHARD = "train-00000-of-00002.h5"


@pytest.fixture(scope="module")
def digits_dir(tmp_path_factory) -> Path:
    """A prepared digits set (8 px, 2 shards a split), copied by tests that damage it."""
    return prepare("digits", None, tmp_path_factory.mktemp("digits") / "d",
                   PrepareOptions(image_size=8, shards=2))


@pytest.fixture
def shards_dir(digits_dir, tmp_path) -> Path:
    out = tmp_path / "d"
    out.mkdir()
    for path in digits_dir.iterdir():
        (out / path.name).write_bytes(path.read_bytes())
    return out


# -- 1: meta.json is read through its schema; shard files stay inside the directory ----------


@pytest.mark.parametrize("file", [
    f"../{SHARD}", f"/tmp/{SHARD}", f"sub/{SHARD}", f"{SHARD}/../../x.h5", "..",
    "test-00000-of-00002.h5", "notes.txt", f"{SHARD}\x00", "",
])
def test_a_shard_file_outside_the_directory_is_refused(shards_dir, file):
    edit_meta(shards_dir, lambda m: m["splits"]["train"]["shards"][0].update(file=file))
    with pytest.raises(ShardError, match=r"meta\.json: splits\.train\.shards\[0\]\.file: .* is "
                                         r"not a shard of this directory"):
        open_shards(shards_dir)


def test_data_verify_refuses_a_path_escape_and_writes_nothing(shards_dir, tmp_path):
    victim = tmp_path / SHARD  # what a run's generate would have overwritten
    victim.write_text("the user's file")
    edit_meta(shards_dir, lambda m: m["splits"]["train"]["shards"][0].update(file=f"../{SHARD}"))
    proc = hpcue("data", "verify", str(shards_dir), check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"hpcue: error: {shards_dir / 'meta.json'}: splits.train.shards[0].file: "
        f"'../{SHARD}' is not a shard of this directory (expected train-NNNNN-of-NNNNN.h5, "
        f"a plain file name)"]
    assert victim.read_text() == "the user's file"


@pytest.mark.parametrize("change,message", [
    (None, "expected a JSON object with format_version, dataset"),
    (lambda m: m.pop("classes"), "classes: Field required"),
    (lambda m: m.update(image_shape=["8", 8, 3]), r"image_shape\[0\]: Input should be a valid "
                                                  r"integer"),
    (lambda m: m.update(image_shape=[8, 8, 1]), r"image_shape: \[8, 8, 1\] is not H x W x 3"),
    (lambda m: m.update(image_dtype="float32"), "image_dtype: Input should be 'uint8'"),
    (lambda m: m.update(classes=["0", "0"]), "classes: names repeat"),
    (lambda m: m.update(format_version=True), "format_version True, this hpcue reads 1"),
    (lambda m: m.update(splits=[]), "splits: Input should be a valid dictionary"),
    (lambda m: m["splits"]["train"]["shards"][0].update(num_samples="674"),
     r"splits\.train\.shards\[0\]\.num_samples: Input should be a valid integer"),
    (lambda m: m["splits"]["train"]["shards"][0].pop("sha256"),
     r"splits\.train\.shards\[0\]\.sha256: Field required"),
    (lambda m: m["splits"]["train"].update(num_samples=5),
     "splits.train: num_samples is 5 but its shards hold 1347"),
    (lambda m: m["splits"]["test"]["shards"][0].update(file=m["splits"]["test"]["shards"][1]
                                                       ["file"]), "is listed twice"),
    (lambda m: m["splits"].update({"a/b": {"num_samples": 0, "shards": []}}),
     "splits: 'a/b' is not a split name"),
])
def test_a_malformed_meta_json_is_one_error_naming_the_key(shards_dir, change, message):
    if change is None:
        (shards_dir / "meta.json").write_text("[1, 2]")
    else:
        edit_meta(shards_dir, change)
    with pytest.raises(ShardError, match=message) as err:
        open_shards(shards_dir)
    assert str(err.value).startswith(f"{shards_dir / 'meta.json'}: ")


def test_meta_json_that_is_not_utf8_is_one_error(shards_dir):
    (shards_dir / "meta.json").write_bytes(b'{"dataset": "\xff"}')
    with pytest.raises(ShardError, match="meta.json: not valid JSON"):
        open_shards(shards_dir)


def test_meta_stays_a_dict_with_every_key(digits_dir):
    shards = open_shards(digits_dir)
    assert shards.meta["dataset"] == "digits" and shards.meta["recipe"]["image_size"] == 8
    assert shards.meta.get("grayscale") is True and shards.meta["compression"] == "none"


# -- 2: verify checks dtypes, datasets, classes and the splits a run needs --------------------


@pytest.mark.parametrize("change,message", [
    (lambda m: m["splits"].pop("test"), "no 'test' split \\(has train\\); a data set for a run "
                                        "needs train and test"),
    (lambda m: m["splits"].pop("train"), "no 'train' split \\(has test\\)"),
    (lambda m: m["splits"].update(train={"num_samples": 0, "shards": []}),
     "split 'train' is empty"),
    (lambda m: m.update(classes=["0"]), "classes: List should have at least 2 items"),
])
def test_verify_refuses_what_a_run_cannot_use(shards_dir, change, message):
    edit_meta(shards_dir, change)
    with pytest.raises(ShardError, match=message):
        verify(shards_dir)


def test_an_unlearnable_set_needs_only_train(shards_dir):
    edit_meta(shards_dir, lambda m: (m["splits"].pop("test"), m.update(source="clean")))
    assert verify(shards_dir) == {"train": 1347}


@pytest.mark.parametrize("datasets,message", [
    ({"labels": np.zeros(674, np.float32)}, f"{SHARD}: labels are float32 \\(674,\\), "
                                            f"expected int64 N"),
    ({"index": np.arange(674, dtype=np.float64)}, f"{SHARD}: index are float64"),
    ({"images": None, "imgs": np.zeros((674, 8, 8, 3), np.uint8)},
     f"{SHARD}: no 'images' dataset \\(has 'imgs'"),
    ({"labels": None}, f"{SHARD}: no 'labels' dataset"),
    ({"labels": np.full(674, 12, np.int64)}, f"{SHARD}: labels 12..12 outside 0..9"),
    ({"labels": np.full(674, -1, np.int64)}, f"{SHARD}: labels -1..-1 outside 0..9"),
])
def test_verify_checks_each_shards_content(shards_dir, datasets, message):
    rewrite_shard(shards_dir, SHARD, **datasets)
    with pytest.raises(ShardError, match=message):
        verify(shards_dir)


def test_verify_refuses_a_training_split_of_one_class(shards_dir):
    for name in (SHARD, "train-00001-of-00002.h5"):
        rewrite_shard(shards_dir, name, labels=np.zeros(673 + (name == SHARD), np.int64))
    with pytest.raises(ShardError, match="split 'train' holds only class '0'"):
        verify(shards_dir)


def test_cli_verify_names_the_missing_split(shards_dir):
    edit_meta(shards_dir, lambda m: m["splits"].pop("test"))
    proc = hpcue("data", "verify", str(shards_dir), check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == (f"hpcue: error: {shards_dir / 'meta.json'}: no 'test' split "
                                   f"(has train); a data set for a run needs train and test")


# -- 2, 3: prepare refuses what an importer returns before writing anything ------------------


def _fake_importer(monkeypatch, load) -> None:
    monkeypatch.setitem(IMPORTERS, "fake", Importer("fake", ("train", "test"), False,
                                                    lambda root, size, opts: load()))


def _images(n: int) -> np.ndarray:
    return np.zeros((n, 8, 8, 3), np.uint8)


@pytest.mark.parametrize("load,message", [
    (lambda: {s: ImageArrays(_images(2), np.array([0, 2]), ["a", "b"]) for s in ("train", "test")},
     r"labels 0\.\.2 outside 0\.\.1 \(2 classes\)"),
    (lambda: {s: ImageArrays(_images(2), np.array([0.0, 1.5]), ["a", "b"])
              for s in ("train", "test")}, "labels must be integers"),
    (lambda: {s: ImageArrays(_images(2), np.array([0, 0]), ["a"]) for s in ("train", "test")},
     r"fake: classes \['a'\]: a data set needs two or more distinct classes"),
    (lambda: {s: ImageArrays(_images(2), np.array([0, 0]), ["a", "b"])
              for s in ("train", "test")}, "fake: every training image is of class 'a'"),
    (lambda: {"train": ImageArrays(_images(2), np.array([0, 1]), ["a", "b"])},
     r"fake: no 'test' split \(has train\); a run needs train and test"),
    (lambda: {"train": ImageArrays(_images(2), np.array([0, 1]), ["a", "b"]),
              "test": ImageArrays(_images(0), np.zeros(0, np.int64), ["a", "b"])},
     "fake: split 'test' is empty"),
])
def test_prepare_refuses_an_import_a_run_cannot_use(tmp_path, monkeypatch, load, message):
    _fake_importer(monkeypatch, load)
    with pytest.raises(InputError, match=message):
        prepare("fake", None, tmp_path / "out", PrepareOptions(image_size=8, shards=1))
    assert not (tmp_path / "out").exists()


def test_prepare_refuses_a_one_class_image_folder(tmp_path):
    root = fabricate.image_folder(tmp_path / "raw", classes=("cat",), per_class=6)
    proc = hpcue("data", "prepare", "imagefolder", "--root", str(root), "--out",
                 str(tmp_path / "out"), "--image-size", "32", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert (f"hpcue: error: imagefolder ({root}): classes ['cat']: a data set needs two or more "
            f"distinct classes") in proc.stderr
    assert not (tmp_path / "out").exists()


def test_prepare_refuses_an_image_folder_without_test(tmp_path):
    root = fabricate.image_folder(tmp_path / "raw" / "train")
    with pytest.raises(InputError, match=r"imagefolder \(.*raw\): no 'test' split \(has train\)"):
        prepare("imagefolder", tmp_path / "raw", tmp_path / "out", PrepareOptions(image_size=32))
    assert root.is_dir() and not (tmp_path / "out").exists()


# -- 3: labels out of range are caught when a split is loaded, once a shard ------------------


@pytest.mark.parametrize("read", [
    lambda s: ShardDataset(s, "train"), lambda s: ShardDataset(s, "train", cache=True),
    lambda s: s.labels("train"), lambda s: s.read_split("train"),
])
def test_loading_refuses_labels_out_of_range(shards_dir, read):
    rewrite_shard(shards_dir, SHARD, labels=np.arange(674, dtype=np.int64) % 11)
    with pytest.raises(ShardError, match=re.escape(f"{shards_dir / SHARD}: labels 0..10 outside "
                                                   f"0..9")):
        read(open_shards(shards_dir))


def test_loading_refuses_fewer_labels_than_meta_says(shards_dir):
    rewrite_shard(shards_dir, SHARD, labels=np.zeros(600, np.int64))
    with pytest.raises(ShardError, match=f"{SHARD}: 600 labels, meta.json says 674 samples"):
        ShardDataset(open_shards(shards_dir), "train")


# -- 4: a resumed prepare keeps a shard only when it holds exactly the bytes it would write ---


def _flip_image_byte(path: Path) -> None:
    """Damage pixel data only: the shard still opens, with the right shape and ids."""
    with h5py.File(path, "r") as f:
        offset = f["images"].id.get_chunk_info(0).byte_offset
    data = bytearray(path.read_bytes())
    data[offset + 5] ^= 0xFF
    path.write_bytes(bytes(data))


def test_a_resumed_prepare_rewrites_a_damaged_shard(tmp_path, monkeypatch):
    root = fabricate.image_folder(tmp_path / "raw", per_class=8)
    opts = PrepareOptions(image_size=32, shards=3)
    out = tmp_path / "o"
    writes = []
    real = shards_module.write_bytes

    def interrupted(path, blob):  # the prepare is killed while writing its second shard
        if len(writes) == 1:
            raise KeyboardInterrupt
        writes.append(path.name)
        real(path, blob)
    monkeypatch.setattr(shards_module, "write_bytes", interrupted)
    with pytest.raises(KeyboardInterrupt):
        prepare("imagefolder", root, out, opts)
    monkeypatch.undo()
    first = out / writes[0]
    assert first.is_file() and not (out / "meta.json").exists()
    _flip_image_byte(first)
    damaged = first.read_bytes()
    prepare("imagefolder", root, out, opts)
    assert first.read_bytes() != damaged
    assert verify(out) == {"train": 12, "test": 4}
    expected = importer("imagefolder").load(root, 32, opts)
    for split, arrays in expected.items():
        assert np.array_equal(open_shards(out).read_split(split).images, arrays.images)


def test_a_resumed_prepare_rewrites_a_shard_damaged_after_its_write(tmp_path):
    """The state test_data_prepare's _as_if_killed leaves, with one shard's pixels flipped."""
    root = fabricate.image_folder(tmp_path / "raw", per_class=8)
    opts = PrepareOptions(image_size=32, shards=3)
    out = prepare("imagefolder", root, tmp_path / "o", opts)
    good = (out / "train-00001-of-00003.h5").read_bytes()
    meta = json.loads((out / "meta.json").read_text())
    (out / "prepare.json").write_text(json.dumps(meta["recipe"]))
    (out / "meta.json").unlink()
    _flip_image_byte(out / "train-00001-of-00003.h5")
    prepare("imagefolder", root, out, opts)
    assert (out / "train-00001-of-00003.h5").read_bytes() == good
    assert verify(out) == {"train": 12, "test": 4}


# -- 5: shards are built in memory; a full disk is an OSError and leaves nothing -------------


@pytest.mark.parametrize("compression", ["none", "lzf", "gzip"])
def test_in_memory_shards_are_what_hdf5_writes_to_disk(tmp_path, compression):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (9, 8, 8, 3), dtype=np.uint8)
    labels, index = rng.integers(0, 10, 9), np.arange(9)
    blob = shard_bytes(images, labels, index, compression)
    assert blob == shard_bytes(images, labels, index, compression)  # deterministic checksums
    comp = None if compression == "none" else compression
    with h5py.File(tmp_path / "disk.h5", "w") as f:  # how shards were written before
        f.create_dataset("images", data=images, chunks=(1, 8, 8, 3), compression=comp)
        f.create_dataset("labels", data=labels.astype(np.int64))
        f.create_dataset("index", data=index.astype(np.int64))
    assert blob == (tmp_path / "disk.h5").read_bytes()
    digest = write_shard(tmp_path / "s.h5", images, labels, index, compression)
    assert digest == hashlib.sha256(blob).hexdigest() == file_sha256(tmp_path / "s.h5")
    with h5py.File(tmp_path / "s.h5", "r") as f:
        assert f["images"].chunks == (1, 8, 8, 3) and f["images"].compression == comp
        assert np.array_equal(f["images"][:], images) and f["labels"].dtype == np.int64
        assert np.array_equal(f["labels"][:], labels) and np.array_equal(f["index"][:], index)


def test_a_failed_shard_write_leaves_no_temporary(tmp_path, monkeypatch):
    real = Path.write_bytes

    def full(self, data):  # half the shard fits, then the disk is full
        real(self, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(Path, "write_bytes", full)
    out = tmp_path / "d"
    with pytest.raises(OSError, match="(?i)no space left"):
        prepare("digits", None, out, PrepareOptions(image_size=8, shards=2))
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_a_full_disk_is_one_error_not_a_segfault(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a 1 MiB tmpfs to fill needs root")
    disk = tmp_path / "disk"
    disk.mkdir()
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)],
                           capture_output=True, text=True)
    if mount.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mount.stderr.strip()}")
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "hpcue.cli", "data", "prepare", "digits", "--out",
             str(disk / "d"), "--image-size", "32", "--shards", "2"],
            cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True,
            text=True, timeout=600)
        left = sorted(p.name for p in disk.rglob("*"))
    finally:
        subprocess.run(["umount", str(disk)], check=True)
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    errors = [line for line in proc.stderr.splitlines() if line.startswith("hpcue: error:")]
    assert len(errors) == 1 and "no space left" in errors[0].lower(), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert left == []  # no temporary, no partial directory


# -- 6: a decompression bomb is refused before it is decoded ---------------------------------


def test_a_decompression_bomb_in_an_image_folder_is_refused(tmp_path):
    root = fabricate.image_folder(tmp_path / "raw")
    bomb = root / "cat" / "bomb.png"
    fabricate.png_header(bomb, 100_000, 100_000)
    with pytest.raises(InputError, match=re.escape(str(bomb)) + ": refused by PIL .*an image may "
                                                                "have at most 89478485 pixels"):
        prepare("imagefolder", root, tmp_path / "out", PrepareOptions(image_size=32))
    assert not (tmp_path / "out").exists()


def test_the_pixel_limit_is_the_projects_own(tmp_path, monkeypatch):
    fabricate.jpeg(tmp_path / "a.jpg", seed=0, size=(40, 30))
    monkeypatch.setattr(images_module, "MAX_PIXELS", 1000)
    with pytest.raises(InputError, match="a.jpg: 40 x 30 pixels; an image may have at most 1000"):
        images_module.decode(tmp_path / "a.jpg", 32)
    monkeypatch.setattr(images_module, "MAX_PIXELS", 10**9)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # PIL's warning range: 1000..2000
    with pytest.raises(InputError, match="a.jpg: refused by PIL"):
        images_module.decode(tmp_path / "a.jpg", 32)


# -- 7: a split is resized a chunk at a time ------------------------------------------------


@pytest.mark.parametrize("shape,size", [((20, 13, 17, 3), 32), ((7, 40, 50, 3), 16),
                                        ((5, 8, 8, 3), 8)])
def test_a_chunked_resize_is_bit_identical(shape, size):
    images = np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)
    whole = resize_uint8(images, size, chunk_bytes=1 << 40)
    assert np.array_equal(resize_uint8(images, size, chunk_bytes=1), whole)
    assert np.array_equal(resize_uint8(images, size, chunk_bytes=200_000), whole)
    assert whole.shape == (shape[0], size, size, 3) and whole.dtype == np.uint8


def test_a_resize_works_a_chunk_at_a_time(monkeypatch):
    images = np.zeros((300, 8, 8, 3), np.uint8)
    seen = []
    real = arrays_module.F.interpolate

    def spy(x, **kw):
        out = real(x, **kw)
        seen.append(x.numel() * 4 + out.numel() * 4)
        return out
    monkeypatch.setattr(arrays_module.F, "interpolate", spy)
    out = resize_uint8(images, 64, chunk_bytes=1 << 20)
    assert out.shape == (300, 64, 64, 3) and len(seen) > 1
    assert max(seen) <= 1 << 20  # the float work of one chunk, never the whole split
    assert isinstance(real(torch.zeros(1, 3, 2, 2), size=(4, 4)), torch.Tensor)
