"""Each raw format fabricated on disk, prepared to shards, verified, and read back bit-exact."""

import json

import h5py
import numpy as np
import pytest
from PIL import Image

from hpcue.data.prepare import PrepareOptions, prepare
from hpcue.data.registry import importer
from hpcue.data.shard_set import open_shards
from hpcue.data.shards import ShardError
from hpcue.data.verify import verify
from hpcue.errors import InputError
from tests import fabricate
from tests.conftest import hpcue


def _prepare(name, root, out, **kw):
    opts = PrepareOptions(**{"image_size": 32, "shards": 2, **kw})
    return open_shards(prepare(name, root, out, opts))


def _roundtrip(name, root, tmp_path, **kw):
    expected = importer(name).load(root, kw.get("image_size", 32), PrepareOptions(**kw))
    shards = _prepare(name, root, tmp_path / "out", **kw)
    assert verify(shards.root) == {s: len(a) for s, a in expected.items()}
    for split, arrays in expected.items():
        back = shards.read_split(split)
        assert np.array_equal(back.images, arrays.images)
        assert np.array_equal(back.labels, arrays.labels)
    return shards


def test_oxford_pet(tmp_path):
    root = fabricate.oxford_pet(tmp_path / "raw")
    shards = _roundtrip("oxford-iiit-pet", root, tmp_path)
    assert len(shards.classes) == 37 and shards.classes[1] == "American Bulldog"
    # 32 px JPEGs at image size 32: the shards hold exactly what PIL decodes
    first = np.asarray(Image.open(root / "oxford-iiit-pet/images/Abyssinian_1.jpg").convert("RGB"))
    assert np.array_equal(shards.read_split("train").images[0], first)
    assert shards.read_split("train").labels.tolist() == [0, 1, 2, 0, 1, 2]


def test_flowers102(tmp_path):
    root = fabricate.flowers102(tmp_path / "raw")
    shards = _roundtrip("flowers102", root, tmp_path)
    assert shards.splits == ["train", "val", "test"] and len(shards.classes) == 102
    assert shards.read_split("val").labels.tolist() == [(i % 5) for i in range(1, 12, 3)]


@pytest.mark.parametrize("channels", [1, 3])
def test_medmnist_npz_bit_exact(tmp_path, channels):
    path = fabricate.medmnist_npz(tmp_path / "raw", "bloodmnist", 28, channels)
    shards = _prepare("medmnist:bloodmnist", tmp_path / "raw", tmp_path / "out",
                      image_size=28, size=28)
    with np.load(path) as npz:
        raw = npz["test_images"]
        labels = npz["test_labels"][:, 0]
    back = shards.read_split("test")
    rgb = raw if channels == 3 else np.repeat(raw[..., None], 3, axis=-1)
    assert np.array_equal(back.images, rgb) and np.array_equal(back.labels, labels)
    assert shards.classes[0] == "basophil"


def test_medmnist_sized_file_is_found(tmp_path):
    fabricate.medmnist_npz(tmp_path / "raw", "pathmnist", 64)
    shards = _prepare("medmnist:pathmnist", tmp_path / "raw", tmp_path / "out",
                      image_size=64, size=64)
    assert shards.image_shape == (64, 64, 3)


def test_imagefolder_and_digits(tmp_path):
    root = fabricate.image_folder(tmp_path / "raw")
    shards = _roundtrip("imagefolder", root, tmp_path, test_fraction=0.4)
    assert shards.classes == ["cat", "dog"] and shards.size("train") + shards.size("test") == 10
    digits = _prepare("digits", None, tmp_path / "digits")
    assert digits.size("train") == 1347 and len(digits.paths("train")) == 2


def test_meta_json_describes_the_shards(tmp_path):
    shards = _prepare("imagefolder", fabricate.image_folder(tmp_path / "raw"), tmp_path / "o",
                      compression="gzip")
    meta = json.loads((tmp_path / "o" / "meta.json").read_text())
    assert meta["format_version"] == 1 and meta["image_dtype"] == "uint8"
    assert meta["image_shape"] == [32, 32, 3]
    for info in meta["splits"]["train"]["shards"]:
        assert set(info) == {"file", "num_samples", "sha256"}
        assert info["file"].startswith("train-") and info["file"].endswith("-of-00002.h5")
    with h5py.File(shards.paths("train")[0]) as f:
        assert f["images"].chunks == (1, 32, 32, 3) and f["images"].compression == "gzip"
        assert f["labels"].dtype == np.int64 and f["index"][0] == 0


def test_rerun_keeps_finished_shards(tmp_path):
    root = fabricate.image_folder(tmp_path / "raw", per_class=8)
    out = _prepare("imagefolder", root, tmp_path / "o", shards=3).root
    first = out / "train-00000-of-00003.h5"
    mtime = first.stat().st_mtime_ns
    _as_if_killed(out)
    (out / "train-00002-of-00003.h5").unlink()
    prepare("imagefolder", root, out, PrepareOptions(image_size=32, shards=3))
    assert first.stat().st_mtime_ns == mtime          # not rewritten
    assert verify(out)["train"] > 0
    assert not (out / "prepare.json").exists()


def _as_if_killed(out):
    """What a prepare killed before its end leaves: shards and prepare.json, no meta.json."""
    meta = json.loads((out / "meta.json").read_text())
    (out / "prepare.json").write_text(json.dumps(meta["recipe"]))
    (out / "meta.json").unlink()


def test_rerun_with_another_recipe_never_mixes_shards(tmp_path):
    root = fabricate.image_folder(tmp_path / "raw", per_class=8)
    out = _prepare("imagefolder", root, tmp_path / "o", shards=3, seed=1).root
    _as_if_killed(out)
    (out / "notes.txt").write_text("the user's own file")
    # another seed draws another train/test split: no old shard may be kept
    prepare("imagefolder", root, out, PrepareOptions(image_size=32, shards=3, seed=2))
    fresh = _prepare("imagefolder", root, tmp_path / "fresh", shards=3, seed=2)
    for split in ("train", "test"):
        assert np.array_equal(open_shards(out).read_split(split).images,
                              fresh.read_split(split).images)
    assert (out / "notes.txt").is_file()
    # a finished directory is not silently reused, nor overwritten, for another recipe
    with pytest.raises(ShardError, match="prepared with .* choose another --out"):
        prepare("imagefolder", root, out, PrepareOptions(image_size=32, shards=2, seed=2))
    replaced = prepare("imagefolder", root, out, PrepareOptions(image_size=32, shards=2, seed=2),
                       replace_other=True)
    assert len(open_shards(replaced).paths("train")) == 2
    assert sorted(p.name for p in out.glob("train-*")) == [
        "train-00000-of-00002.h5", "train-00001-of-00002.h5"]


# -- bad input: one clear error naming the file, and nothing left behind ---------------------


@pytest.mark.parametrize("case,message", [
    ("missing_root", "image folder not found"),
    ("missing_image", "Abyssinian_1.jpg: missing (listed image)"),
    ("corrupt_jpeg", "Abyssinian_1.jpg: not a readable image"),
    ("pet_label_range", "class ids outside 1..37"),
    ("npz_label_range", "test_labels outside 0..7"),
    ("npz_mixed_shapes", "images of mixed shapes"),
    ("npz_empty_split", "split 'train' is empty"),
    ("npz_missing", "bloodmnist_28.npz"),
    ("npz_corrupt", "not a readable .npz file"),
    ("flowers_empty_split", "split 'val' (valid) is empty"),
])
def test_bad_raw_input(tmp_path, case, message):
    raw, name = tmp_path / "raw", "oxford-iiit-pet"
    if case == "missing_root":
        name, raw = "imagefolder", tmp_path / "nope"
    elif case in ("missing_image", "corrupt_jpeg", "pet_label_range"):
        fabricate.oxford_pet(raw)
        img = raw / "oxford-iiit-pet/images/Abyssinian_1.jpg"
        if case == "missing_image":
            img.unlink()
        elif case == "corrupt_jpeg":
            img.write_bytes(img.read_bytes()[:50])
        else:
            p = raw / "oxford-iiit-pet/annotations/test.txt"
            p.write_text(p.read_text().replace("Bengal_102 3", "Bengal_102 40"))
    elif case.startswith("npz"):
        name = "medmnist:bloodmnist"
        path = fabricate.medmnist_npz(raw)
        if case == "npz_missing":
            path.unlink()
        elif case == "npz_corrupt":
            path.write_bytes(path.read_bytes()[:100])
        else:
            with np.load(path) as npz:
                arrays = dict(npz)
            if case == "npz_label_range":
                arrays["test_labels"][0] = 99
            elif case == "npz_empty_split":
                arrays["train_images"] = arrays["train_images"][:0]
                arrays["train_labels"] = arrays["train_labels"][:0]
            else:
                mixed = np.empty(2, dtype=object)
                mixed[0] = np.zeros((28, 28, 3), np.uint8)
                mixed[1] = np.zeros((20, 20, 3), np.uint8)
                arrays["train_images"] = mixed
            np.savez(path, **arrays)
    elif case == "flowers_empty_split":
        from scipy.io import savemat

        name = "flowers102"
        fabricate.flowers102(raw)
        savemat(raw / "flowers-102/setid.mat", {"trnid": np.array([[1, 2]]),
                                                 "valid": np.zeros((1, 0)), "tstid": [[3]]})
    out = tmp_path / "out"
    with pytest.raises((ValueError, FileNotFoundError)) as err:
        prepare(name, raw, out, PrepareOptions(image_size=28 if "npz" in case else 32, size=None))
    assert message in str(err.value)
    assert not out.exists()


def test_bad_shards_are_caught_by_verify(tmp_path):
    out = _prepare("imagefolder", fabricate.image_folder(tmp_path / "raw"), tmp_path / "o").root
    shard = out / "train-00001-of-00002.h5"
    data = bytearray(shard.read_bytes())
    data[-10] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(ShardError, match="train-00001-of-00002.h5: checksum mismatch"):
        verify(out)
    shard.write_bytes(bytes(data[:200]))  # truncated
    meta = json.loads((out / "meta.json").read_text())
    from hpcue.io import file_sha256

    meta["splits"]["train"]["shards"][1]["sha256"] = file_sha256(shard)
    (out / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ShardError, match="train-00001-of-00002.h5: not a readable HDF5 shard"):
        verify(out)
    with pytest.raises(ShardError, match="no split 'validation'"):
        open_shards(out).shards("validation")
    with pytest.raises(ShardError, match="meta.json not found"):
        open_shards(tmp_path)


def test_cli_prepare_verify_info(tmp_path):
    root = fabricate.image_folder(tmp_path / "raw")
    out = tmp_path / "shards"
    proc = hpcue("data", "prepare", "imagefolder", "--root", str(root), "--out", str(out),
                 "--image-size", "32", "--shards", "2", "--compression", "lzf")
    assert "train 7, test 3" in proc.stdout
    assert "OK" in hpcue("data", "verify", str(out)).stdout
    info = json.loads(hpcue("data", "info", str(out)).stdout)
    assert info["splits"]["train"] == {"num_samples": 7, "shards": 2}


@pytest.mark.parametrize("args,message", [
    (["prepare", "medmnist:nosuch", "--out", "X"], "unknown MedMNIST flag 'nosuch'"),
    (["prepare", "imagefolder", "--root", "NOPE", "--out", "X"], "NOPE: image folder not found"),
    (["prepare", "digits", "--out", "X", "--compression", "zstd"], "unknown compression 'zstd'"),
    (["verify", "NOPE"], "meta.json not found"),
    (["prepare", "flowers102", "--out", "X"], "flowers102 needs --root"),
    (["prepare", "imagefolder", "--out", "X"], "imagefolder needs --root"),
])
def test_cli_errors(tmp_path, args, message):
    args = [str(tmp_path / a) if a in ("X", "NOPE") else a for a in args]
    proc = hpcue("data", *args, check=False)
    assert proc.returncode == 2 and message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "X").exists()


def test_damaged_shard_is_one_clear_error_in_a_run(tmp_path):
    shards = tmp_path / "shards"
    hpcue("data", "prepare", "digits", "--out", str(shards), "--image-size", "16",
          "--shards", "2")
    victim = shards / "train-00001-of-00002.h5"
    victim.write_bytes(victim.read_bytes()[:2000])  # truncated
    proc = hpcue("run", "--out", str(tmp_path / "run"), "--set", f"data.shards={shards}",
                 "--set", "data.image_size=16", check=False)
    assert proc.returncode == 2, proc.stderr
    assert f"{victim}: not a readable HDF5 shard" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "run").exists()


def test_medmnist_float_labels_are_refused_not_truncated(tmp_path):
    path = fabricate.medmnist_npz(tmp_path / "raw")
    arrays = dict(np.load(path))
    arrays["train_labels"] = arrays["train_labels"].astype(np.float64) + 0.5
    np.savez(path, **arrays)
    with pytest.raises(InputError, match=r"bloodmnist.npz: train_labels must be integers, got "
                                         r"float64"):
        _prepare("medmnist:bloodmnist", tmp_path / "raw", tmp_path / "out", size=28)
    assert not (tmp_path / "out").exists()
