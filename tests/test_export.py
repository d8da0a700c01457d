"""``export_run``: a run's unlearnable training set as PNG folders, a MedMNIST npz, or the source's
own layout; read back bit for bit, never over an existing folder, nothing left on a failure.

The run directories are fabricated, not trained: a clean set prepared by the real ``prepare``
from tiny raw data, an "unlearnable" set of perturbed copies written with hpcue's own shard
writer, and the stage records and results.json export reads.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hpcue.data.images import decode
from hpcue.data.importers.medmnist_npz import load_medmnist_split, npz_path
from hpcue.data.meta_io import SOURCES, write_meta
from hpcue.data.options import PrepareOptions
from hpcue.data.prepare import prepare
from hpcue.data.shard_set import open_shards
from hpcue.data.shards import ShardError, ShardInfo, reading, write_shard
from hpcue.data.verify import verify
from hpcue.errors import BusyError, HpcueError, InputError, MissingInputError
from hpcue.export import MANIFEST, NPZ, README, ExportError, export_run
from hpcue.io import atomic_write_json, exclusive
from hpcue.stages.rundir import RunDir, StageInputError
from tests import fabricate

EPS = 8 / 255


def _perturb(clean: Path, out: Path, channels: int, seed: int = 0) -> None:
    """An unlearnable set as generate writes it: each clean training shard perturbed within
    EPS into a shard of the same name, meta.json naming its source."""
    data = open_shards(clean)
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True)
    infos = []
    for info in data.shards("train"):
        with reading(clean / info.file) as f:
            images, labels, index = f["images"][:], f["labels"][:], f["index"][:]
        delta = rng.integers(-8, 9, (*images.shape[:3], channels))
        perturbed = np.clip(images.astype(np.int16) + delta, 0, 255).astype(np.uint8)
        infos.append(ShardInfo(info.file, len(images),
                               write_shard(out / info.file, perturbed, labels, index)))
    write_meta(out, f"{data.meta['dataset']}+uc", data.classes, data.image_shape,
               {"train": infos}, {"source": str(clean)})


def _stages(run: RunDir, image_size: int, channels: int, k: int = 3) -> None:
    """What an export reads to protect the test split: the run's config, its small_cnn
    surrogate, clusters (K-means' centers in its feature space) and perturbations."""
    import torch

    from hpcue.config import load_config, save_config
    from hpcue.models.small_cnn import SmallCNN
    from hpcue.stages.artifacts import (
        Clusters,
        Perturbations,
        write_clusters,
        write_perturbations,
        write_surrogate,
    )

    torch.manual_seed(0)
    save_config(load_config(overrides=["surrogate.arch=small_cnn"]), run.config)
    write_surrogate(run, SmallCNN(4, width=4))
    n = open_shards(run.data).size("train")
    write_clusters(run, Clusters(torch.randn(k, 16), torch.arange(n) % k))
    deltas = (torch.rand(k, channels, image_size, image_size) * 2 - 1) * EPS
    write_perturbations(run, Perturbations(deltas, EPS))


def _run(root: Path, dataset: str, raw: Path | None, image_size: int, channels: int = 3,
         finished: bool = True, **opts) -> RunDir:
    run = RunDir(root)
    prepare(dataset, raw, run.data, PrepareOptions(image_size=image_size, shards=2,
                                                   test_fraction=0.4, **opts))
    _perturb(run.data, run.unlearnable, channels)
    _stages(run, image_size, channels)
    run.write_record("cluster", {"num_clusters": 3, "config": {"surrogate.arch": "small_cnn"}})
    run.write_record("train", {"epsilon": EPS, "perturbation_channels": channels})
    run.write_record("generate", {"max_abs_pixel_change_255": 8, "psnr_db": 36.1, "ssim": 0.97})
    if finished:
        atomic_write_json(run.results, {"epsilon": EPS, "num_clusters": 3,
                                        "surrogate": "small_cnn", "victim": "resnet18",
                                        "clean_test_acc": 0.91, "unlearnable_test_acc": 0.23})
    return run


def _png(path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(path)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, RunDir]:
    """Four finished tiny runs, built once and only read: an image folder (train/test folders,
    a PNG source file and a JPEG beside a PNG of the same stem), gray MedMNIST at 28 px, RGB
    MedMNIST at 64 px, and digits."""
    base = tmp_path_factory.mktemp("export-runs")
    raw = base / "raw-folder"
    fabricate.image_folder(raw / "train", per_class=3)
    fabricate.image_folder(raw / "test", per_class=2)
    _png(raw / "train" / "cat" / "x.png", 1)
    _png(raw / "train" / "dog" / "0.png", 2)  # beside dog/0.jpg
    fabricate.medmnist_npz(base / "raw-blood", "bloodmnist", 28, channels=1, n=6)
    fabricate.medmnist_npz(base / "raw-path", "pathmnist", 64, channels=3, n=5)
    return {
        "folder": _run(base / "folder", "imagefolder", raw, 16),
        "blood": _run(base / "blood", "medmnist:bloodmnist", base / "raw-blood", 28,
                      channels=1, finished=False, size=28),
        "path": _run(base / "path", "medmnist:pathmnist", base / "raw-path", 64, size=64),
        "digits": _run(base / "digits", "digits", None, 8),
    }


def _copy(run: RunDir, dest: Path, source: str | None = None) -> RunDir:
    """A copy to damage; its unlearnable set names ``source`` (default: the copy's own data)."""
    shutil.copytree(run.root, dest)
    copy = RunDir(dest)
    fabricate.edit_meta(copy.unlearnable,
                        lambda m: m.update(source=source or str(copy.data)))
    return copy


def _shards(run: RunDir) -> tuple[np.ndarray, np.ndarray]:
    """The unlearnable training set, images and labels by sample id."""
    arrays = open_shards(run.unlearnable).read_split("train")
    return arrays.images, arrays.labels


def _manifest(out: Path) -> dict:
    return json.loads((out / MANIFEST).read_text())


def _nothing_left(parent: Path, out: Path) -> None:
    assert not out.exists()
    assert not list(parent.glob(f"{out.name}.partial-*"))


def test_imagefolder_round_trip(runs, tmp_path):
    run, out = runs["folder"], tmp_path / "published"
    summary = export_run(run.root, "imagefolder", out, train_only=True)
    images, labels = _shards(run)
    assert summary == {"format": "imagefolder", "out": str(out), "images": len(images),
                       "classes": 2}
    manifest = _manifest(out)
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png")) == sorted(
        s["file"] for s in manifest["samples"])
    for s in manifest["samples"]:
        path = out / s["file"]
        assert path.parts[-3:-1] == ("train", s["class"]) and path.suffix == ".png"
        assert np.array_equal(np.asarray(Image.open(path).convert("RGB")), images[s["id"]])
        assert s["label"] == labels[s["id"]] and s["class"] == ["cat", "dog"][s["label"]]
        assert hashlib.sha256(path.read_bytes()).hexdigest() == s["sha256"]
        assert s["source"].startswith(f"train/{s['class']}/")
    assert [s["id"] for s in manifest["samples"]] == list(range(len(images)))
    assert manifest["method"].items() >= {"name": "unlearnable clusters", "epsilon": EPS,
                                          "epsilon_255": 8.0, "num_clusters": 3,
                                          "surrogate": "small_cnn"}.items()
    assert manifest["split"] == "train" and manifest["hpcue_version"]
    readme = (out / README).read_text()
    for said in ("unlearnable", "Labels are untouched", "8/255", "K = 3", "small_cnn",
                 "Only the training split", MANIFEST, "hpcue 0."):
        assert said in readme
    assert not list(tmp_path.glob("*.partial-*"))


@pytest.mark.parametrize("name,gray", [("folder", False), ("blood", True)])
def test_npz_round_trip(runs, tmp_path, name, gray):
    run, out = runs[name], tmp_path / "npz"
    export_run(run.root, "npz", out, train_only=True)
    images, labels = _shards(run)
    with np.load(out / NPZ) as npz:
        assert sorted(npz.files) == ["train_images", "train_labels"]
        x, y = npz["train_images"], npz["train_labels"]
    assert x.dtype == np.uint8 and y.dtype == np.uint8 and y.shape == (len(images), 1)
    assert x.shape == (images.shape[:3] if gray else images.shape)
    assert np.array_equal(x[..., None].repeat(3, -1) if gray else x, images)
    assert np.array_equal(y[:, 0], labels)
    digest = hashlib.sha256((out / NPZ).read_bytes()).hexdigest()
    rows = _manifest(out)["samples"]
    assert [(s["file"], s["row"], s["id"], s["sha256"]) for s in rows] == [
        (NPZ, i, i, digest) for i in range(len(images))]
    if name == "blood":  # hpcue's own MedMNIST importer reads it back as it was
        back = load_medmnist_split(out / NPZ, "bloodmnist", "train", 28)
        assert np.array_equal(back.images, images) and np.array_equal(back.labels, labels)
        method = _manifest(out)["method"]  # not finished: the records say how it was made
        assert (method["epsilon_255"], method["clean_test_acc"]) == (8.0, None)
        assert "8/255" in (out / README).read_text()


def test_same_as_source_image_folder(runs, tmp_path):
    # the unlearnable set's recorded source moved away: the run's own data/ is found
    run = _copy(runs["folder"], tmp_path / "run", source=str(tmp_path / "moved"))
    out = tmp_path / "same"
    export_run(run.root, "same-as-source", out, train_only=True)
    images, labels = _shards(run)
    by_source = {s["source"]: s for s in _manifest(out)["samples"]}
    assert {k: v["file"] for k, v in by_source.items()} == {
        "train/cat/0.jpg": "train/cat/0.png", "train/cat/1.jpg": "train/cat/1.png",
        "train/cat/2.jpg": "train/cat/2.png", "train/cat/x.png": "train/cat/x.png",
        "train/dog/0.jpg": "train/dog/0.jpg.png", "train/dog/0.png": "train/dog/0.png",
        "train/dog/1.jpg": "train/dog/1.png", "train/dog/2.jpg": "train/dog/2.png"}
    for s in by_source.values():
        path = out / s["file"]
        assert np.array_equal(np.asarray(Image.open(path).convert("RGB")), images[s["id"]])
        assert s["label"] == labels[s["id"]]
        assert hashlib.sha256(path.read_bytes()).hexdigest() == s["sha256"]
    assert len(list(out.rglob("*.png"))) == len(images)


def test_same_as_source_medmnist(runs, tmp_path):
    run, out = runs["path"], tmp_path / "same"
    export_run(run.root, "same-as-source", out, train_only=True)
    images, labels = _shards(run)
    assert sorted(p.name for p in out.iterdir()) == [README, MANIFEST, "pathmnist_64.npz"]
    path = npz_path(out, "pathmnist", 64)  # where the importer (and medmnist) look for it
    with np.load(path) as npz:
        assert npz["train_images"].shape == images.shape
        assert npz["train_labels"].shape == (len(images), 1)
    back = load_medmnist_split(path, "pathmnist", "train", 64)
    assert np.array_equal(back.images, images) and np.array_equal(back.labels, labels)
    assert [s["source"] for s in _manifest(out)["samples"]] == [
        f"pathmnist_64.npz:train_images[{i}]" for i in range(len(images))]


def test_same_as_source_refuses_digits(runs, tmp_path):
    with pytest.raises(InputError, match=r"digits has no source files.*--format imagefolder "
                                         r"or --format npz"):
        export_run(runs["digits"].root, "same-as-source", tmp_path / "out")
    _nothing_left(tmp_path, tmp_path / "out")


def test_old_shards_without_names(runs, tmp_path):
    """A clean set prepared before names were recorded still verifies and exports as PNG
    folders; same-as-source says to prepare again."""
    run = _copy(runs["folder"], tmp_path / "run")
    fabricate.edit_meta(run.data, lambda m: m.pop("sources_sha256"))
    (run.data / SOURCES).unlink()
    assert verify(run.data) == {"train": 8, "test": 4}
    with pytest.raises(InputError, match=r"does not record its source file names.*prepare the "
                                         r"data again.*--format imagefolder"):
        export_run(run.root, "same-as-source", tmp_path / "out")
    _nothing_left(tmp_path, tmp_path / "out")
    export_run(run.root, "imagefolder", tmp_path / "out")
    assert {s["source"] for s in _manifest(tmp_path / "out")["samples"]} == {None}


def test_prepare_records_source_names(runs, tmp_path):
    """sources.json: each sample's file, in sample-id order (also for a seeded hold-out
    split), checked by verify like a shard."""
    flat = fabricate.image_folder(tmp_path / "flat", per_class=4)
    data = open_shards(prepare("imagefolder", flat, tmp_path / "shards",
                               PrepareOptions(image_size=16, shards=2, test_fraction=0.5)))
    for split in ("train", "test"):
        images, names = data.read_split(split).images, data.source_names(split)
        assert len(names) == len(images) == 4
        for image, name in zip(images, names, strict=True):
            assert np.array_equal(decode(flat / name, 16), image)
    assert open_shards(runs["digits"].data).source_names("train") is None
    (tmp_path / "shards" / SOURCES).write_text('{"splits": {}}\n')
    with pytest.raises(ShardError, match=rf"{SOURCES}: checksum mismatch"):
        verify(tmp_path / "shards")


def test_importers_name_their_files(tmp_path):
    """Oxford-IIIT Pet and Flowers-102 name each image by its path under --root."""
    from hpcue.data.registry import importer

    opts = PrepareOptions(image_size=32)
    pets = importer("oxford-iiit-pet").load(fabricate.oxford_pet(tmp_path / "pets"), 32, opts)
    assert pets["train"].names[:2] == ["oxford-iiit-pet/images/Abyssinian_1.jpg",
                                       "oxford-iiit-pet/images/american_bulldog_2.jpg"]
    flowers = importer("flowers102").load(fabricate.flowers102(tmp_path / "fl"), 32, opts)
    assert flowers["val"].names == [f"flowers-102/jpg/image_{i:05d}.jpg" for i in (2, 5, 8, 11)]


def test_waits_for_no_pipeline_command(runs, tmp_path):
    """A command working in the run (it may be rewriting unlearnable/) holds its lock."""
    run = _copy(runs["folder"], tmp_path / "run")
    with exclusive(run.lock, f"run directory {run.root}"):
        with pytest.raises(BusyError, match="in use by hpcue on"):
            export_run(run.root, "npz", tmp_path / "out")
    _nothing_left(tmp_path, tmp_path / "out")
    export_run(run.root, "npz", tmp_path / "out")


def test_refuses_to_overwrite(runs, tmp_path):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    with pytest.raises(InputError, match=rf"{out} exists and is not empty"):
        export_run(runs["folder"].root, "imagefolder", out)
    assert [p.name for p in out.iterdir()] == ["mine.txt"]
    assert (out / "mine.txt").read_text() == "keep me"
    assert not list(tmp_path.glob("*.partial-*"))
    empty = tmp_path / "empty"
    empty.mkdir()  # an empty folder is taken as it is
    assert export_run(runs["folder"].root, "npz", empty, train_only=True)["images"] == 8


def _corrupt_one(monkeypatch):
    """The third PNG written comes out one pixel off: only reading back can catch it."""
    import hpcue.export.layouts as layouts

    real, calls = layouts._png, []

    def png(image):
        calls.append(1)
        if len(calls) == 3:
            image = image.copy()
            image[0, 0] ^= 1
        return real(image)
    monkeypatch.setattr(layouts, "_png", png)


def _interrupt(monkeypatch):
    import hpcue.export as export

    def readme(*args):
        raise KeyboardInterrupt
    monkeypatch.setattr(export, "readme", readme)


@pytest.mark.parametrize("fault,error", [(_corrupt_one, ExportError),
                                         (_interrupt, KeyboardInterrupt)])
def test_nothing_left_on_failure(runs, tmp_path, monkeypatch, fault, error):
    fault(monkeypatch)
    with pytest.raises(error) as caught:  # the folders above out are made, and removed again
        export_run(runs["folder"].root, "imagefolder", tmp_path / "new" / "deeper" / "out")
    if error is ExportError:
        assert "does not read back as written" in str(caught.value)
    assert list(tmp_path.iterdir()) == []


def _no_run(run: RunDir, tmp: Path) -> tuple[Path, str]:
    return tmp / "nowhere", "imagefolder"


def _no_unlearnable(run: RunDir, tmp: Path) -> tuple[Path, str]:
    copy = _copy(run, tmp / "run")
    shutil.rmtree(copy.unlearnable)
    return copy.root, "npz"


def _no_clean_set(run: RunDir, tmp: Path) -> tuple[Path, str]:
    copy = _copy(run, tmp / "run", source=str(tmp / "moved"))
    shutil.rmtree(copy.data)
    return copy.root, "same-as-source"


def _unknown_format(run: RunDir, tmp: Path) -> tuple[Path, str]:
    return run.root, "tiff"


def _damaged_shard(run: RunDir, tmp: Path) -> tuple[Path, str]:
    copy = _copy(run, tmp / "run")
    shard = next(copy.unlearnable.glob("train-*.h5"))
    blob = bytearray(shard.read_bytes())
    blob[-100] ^= 0xFF
    shard.write_bytes(bytes(blob))
    return copy.root, "imagefolder"


def _truncated_shard(run: RunDir, tmp: Path) -> tuple[Path, str]:
    copy = _copy(run, tmp / "run")
    shard = next(copy.unlearnable.glob("train-*.h5"))
    shard.write_bytes(shard.read_bytes()[:500])
    fabricate.fix_sha(copy.unlearnable, shard.name)
    return copy.root, "npz"


@pytest.mark.parametrize("make,kind,message", [
    (_no_run, MissingInputError, r"nowhere: run directory not found"),
    (_no_unlearnable, StageInputError,
     r"no unlearnable set .*run `hpcue generate --out .*run` first"),
    (_no_clean_set, MissingInputError,
     r"clean data set .* is not found \(.*moved, nor .*run/data\): export from where"),
    (_unknown_format, InputError, r"unknown export format 'tiff': expected one of imagefolder, "
                                  r"npz, same-as-source"),
    (_damaged_shard, ShardError, r"train-0000\d-of-00002\.h5: checksum mismatch"),
    (_truncated_shard, ShardError, r"train-0000\d-of-00002\.h5: not a readable HDF5 shard"),
])
def test_bad_input_is_one_clear_error(runs, tmp_path, make, kind, message):
    root, fmt = make(runs["folder"], tmp_path)
    out = tmp_path / "out"
    with pytest.raises(HpcueError) as caught:
        export_run(root, fmt, out)
    assert type(caught.value) is kind
    assert len(str(caught.value).splitlines()) == 1
    assert caught.value.__cause__ is None or caught.value.__suppress_context__
    assert re.search(message, str(caught.value)), str(caught.value)
    _nothing_left(tmp_path, out)


def test_class_folders_are_plain_names():
    from hpcue.export.layouts import class_folders

    assert class_folders(["a/b", "a_b", "..", "", "ok"]) == ["a_b", "001_a_b", "002", "003",
                                                            "ok"]


#: each verdict level and the paired per-seed margins over random noise that give it
MARGINS = {"protected": [0.35, 0.4, 0.38], "weak": [0.05, 0.06, 0.04],
           "uncertain": [0.4, -0.2, 0.2], "not protected": [0.01, -0.01, 0.0],
           "undecided": [0.4]}


def _judged(run: RunDir, dest: Path, level: str | None) -> RunDir:
    """A copy of ``run`` whose results.json records the verdict ``level`` (None: none, as an
    older hpcue wrote it), made by the real verdict rules from figures that give it."""
    from hpcue.evaluation.metrics import seed_summary
    from hpcue.evaluation.verdict import verdict

    copy = _copy(run, dest)
    results = json.loads(copy.results.read_text())
    if level is not None:
        margins = MARGINS[level]
        figures = {"unlearnable_test_acc": 0.23, "clean_test_acc": 0.91,
                   "uc_below_clean": seed_summary([0.68] * len(margins), 0.0001, 450,
                                                  bounds=(-1, 1)),
                   "uc_advantage_over_random": seed_summary(margins, 0.0001, 450,
                                                            bounds=(-1, 1)),
                   "baselines": {"random": {"mean": 0.6}}}
        results["verdict"] = verdict(figures)
        assert results["verdict"]["level"] == level
    atomic_write_json(copy.results, results)
    return copy


@pytest.mark.parametrize("level", ["protected", "weak", "uncertain", "undecided", None])
def test_the_readme_opens_with_the_runs_verdict_and_its_figures(runs, tmp_path, capsys, level):
    run, out = _judged(runs["folder"], tmp_path / "run", level), tmp_path / "out"
    export_run(run.root, "imagefolder", out)
    readme = (out / README).read_text()
    head = readme.split("\n\n")[1]  # the first lines after the title
    said = {"protected": "found it protected", "weak": "found it only weakly protected",
            "uncertain": "could not tell whether it is protected",
            "undecided": "reached no verdict", None: "No verdict was recorded"}[level]
    assert said in head
    assert head.startswith("**Warning: ") is (level != "protected")
    # never the unconditional claim: what a model learns is the verdict's, not the README's
    assert "chosen so that a model" not in readme and "learns little" not in readme
    verdict = json.loads(run.results.read_text()).get("verdict")
    assert _manifest(out)["verdict"] == (None if verdict is None else
                                         {"level": level, "text": verdict["text"]})
    if verdict is not None:  # its words, figures and 95% intervals, quoted
        for line in verdict["text"]:
            assert f"> {line}" in readme
        assert "scores 0.23" in readme and "0.91" in readme
        if level != "undecided":
            assert "0.60" in readme and "95% interval" in readme
    printed = capsys.readouterr()
    if level == "protected":
        assert "WARNING" not in printed.err + printed.out
    else:  # one line, on stderr: at every verbosity, and never mixed into what a script reads
        (warning,) = printed.err.splitlines()
        assert warning.startswith("[hpcue] WARNING: ") and said in warning


def test_an_unprotected_run_is_refused_unless_asked_for(runs, tmp_path, capsys):
    run, out = _judged(runs["folder"], tmp_path / "run", "not protected"), tmp_path / "out"
    with pytest.raises(InputError) as caught:
        export_run(run.root, "npz", out)
    message = str(caught.value)
    assert len(message.splitlines()) == 1
    assert "found no protection" in message and "--even-if-unprotected" in message
    _nothing_left(tmp_path, out)
    export_run(run.root, "npz", out, even_if_unprotected=True)
    head = (out / README).read_text().split("\n\n")[1]
    assert head.startswith("**Warning: The run that made this set found NO protection")
    assert "WARNING: The run that made this set found NO protection" in capsys.readouterr().err


def test_the_cli_refuses_an_unprotected_run_with_exit_2_and_the_flag_exports_it(runs, tmp_path):
    from tests.conftest import hpcue

    run, out = _judged(runs["folder"], tmp_path / "run", "not protected"), tmp_path / "out"
    proc = hpcue("export", str(run.root), "--out", str(out), check=False)
    assert proc.returncode == 2 and "--even-if-unprotected" in proc.stderr
    _nothing_left(tmp_path, out)
    proc = hpcue("export", str(run.root), "--out", str(out), "--even-if-unprotected",
                 "--train-only")
    assert "WARNING: The run that made this set found NO protection" in proc.stderr
    assert proc.stdout.strip() == f"[hpcue] exported 8 images (imagefolder) to {out}"
    assert "found NO protection" in (out / README).read_text()


# -- the test split, published protected (nearest cluster center), unless --train-only --

def _files(out: Path) -> list[str]:
    return sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())


def test_the_default_export_holds_the_test_split_protected(runs, tmp_path):
    """Fabricated runs: test/ beside train/, MedMNIST's test keys in the same npz, the manifest
    says each sample's split and how its cluster was chosen, the README which was done."""
    run = runs["folder"]
    export_run(run.root, "imagefolder", tmp_path / "folder")
    manifest = _manifest(tmp_path / "folder")
    assert manifest["splits"] == {"train": 8, "test": 4} and manifest["images"] == 12
    assert manifest["split"] == "train+test"
    test = [s for s in manifest["samples"] if s["split"] == "test"]
    assert sorted(s["file"] for s in test) == [f"test/{c}/{i:05d}.png"
                                               for c, i in [("cat", 0), ("cat", 1),
                                                            ("dog", 2), ("dog", 3)]]
    assert {s["cluster_assigned_by"] for s in test} == {"nearest center"}
    assert all(0 <= s["cluster"] < 3 for s in test)
    assert {s["cluster_assigned_by"] for s in manifest["samples"]
            if s["split"] == "train"} == {"k-means"}
    readme = (tmp_path / "folder" / README).read_text()
    assert "The test split is here too, protected" in readme and "Only the training" not in readme
    export_run(run.root, "imagefolder", tmp_path / "train-only", train_only=True)
    assert "exported with `--train-only`" in (tmp_path / "train-only" / README).read_text()

    blood = runs["blood"]
    export_run(blood.root, "npz", tmp_path / "npz")
    with np.load(tmp_path / "npz" / NPZ) as npz:
        assert sorted(npz.files) == ["test_images", "test_labels", "train_images",
                                     "train_labels"]
        assert npz["test_images"].shape == (open_shards(blood.data).size("test"), 28, 28)
    export_run(runs["path"].root, "same-as-source", tmp_path / "same")
    assert sorted(p.name for p in (tmp_path / "same").iterdir()) == [
        README, MANIFEST, "pathmnist_64.npz"]
    back = load_medmnist_split(tmp_path / "same" / "pathmnist_64.npz", "pathmnist", "test", 64)
    clean = open_shards(runs["path"].data).read_split("test")
    assert np.array_equal(back.labels, clean.labels)
    assert np.abs(back.images.astype(int) - clean.images).max() <= round(EPS * 255)


def test_a_clean_set_without_a_test_split_exports_as_before(runs, tmp_path):
    run = _copy(runs["folder"], tmp_path / "run")
    fabricate.edit_meta(run.data, lambda m: m["splits"].pop("test"))
    export_run(run.root, "imagefolder", tmp_path / "out")
    export_run(run.root, "imagefolder", tmp_path / "before", train_only=True)
    assert _files(tmp_path / "out") == _files(tmp_path / "before")
    assert "the data set has no test split" in (tmp_path / "out" / README).read_text()


def test_a_run_without_clusters_says_so_and_how_to_export_the_training_split(runs, tmp_path):
    run = _copy(runs["folder"], tmp_path / "run")
    run.clusters.unlink()
    with pytest.raises(StageInputError, match="clusters.pt"):
        export_run(run.root, "imagefolder", tmp_path / "out")
    _nothing_left(tmp_path, tmp_path / "out")
    assert export_run(run.root, "imagefolder", tmp_path / "out", train_only=True)["images"] == 8


@pytest.fixture(scope="module")
def flat_run(tmp_path_factory) -> tuple[Path, RunDir, Path]:
    """A finished tiny ``hpcue run`` on a flat image folder (``<root>/<class>/*.jpg``), whose
    prepare held out a stratified test split: the user's images, a quarter never perturbed."""
    from tests.conftest import REPO, hpcue, tiny_sets

    base = tmp_path_factory.mktemp("flat")
    raw = fabricate.image_folder(base / "images", classes=("circle", "square", "star"),
                                 per_class=8)
    hpcue("data", "prepare", "imagefolder", "--root", str(raw), "--image-size", "16",
          "--out", str(base / "shards"))
    hpcue("run", "--config", str(REPO / "configs" / "cpu-imagefolder.yaml"), "--out",
          str(base / "run"), *tiny_sets([f"data.shards={base / 'shards'}",
                                         "cluster.num_clusters=4",
                                         "train.global_batch_size=8",
                                         "victim.global_batch_size=8"]))
    return raw, RunDir(base / "run"), base / "shards"


@pytest.mark.parametrize("fmt", ["imagefolder", "npz", "same-as-source"])
def test_every_image_given_is_published_once_the_test_split_protected(flat_run, tmp_path,
                                                                       fmt):
    import torch

    from hpcue.config import load_config
    from hpcue.models.surrogate import build_surrogate
    from hpcue.stages.artifacts import read_clusters, read_perturbations
    from hpcue.stages.cluster import extract_features
    from hpcue.stages.generate import perturb_uint8

    raw, run, shards = flat_run
    given = sorted(p.relative_to(raw).as_posix() for p in raw.rglob("*.jpg"))
    out = tmp_path / "out"
    summary = export_run(run.root, fmt, out, even_if_unprotected=True)
    manifest = _manifest(out)
    samples = manifest["samples"]
    clean = open_shards(shards)
    assert summary["images"] == len(samples) == len(given) == 24
    assert manifest["splits"] == {"train": clean.size("train"), "test": clean.size("test")}
    assert clean.size("test") > 0
    assert sorted(s["source"] for s in samples) == given  # each image given, exactly once
    if fmt == "same-as-source":
        assert sorted(s["file"] for s in samples) == [g.replace(".jpg", ".png") for g in given]
        assert _files(out) == sorted([MANIFEST, README, *(s["file"] for s in samples)])
    if fmt == "imagefolder":
        assert {s["file"].split("/")[0] for s in samples} == {"train", "test"}

    def image(s: dict) -> np.ndarray:
        if fmt == "npz":
            with np.load(out / NPZ) as npz:
                x = npz[f"{s['split']}_images"][s["row"]]
            return x[..., None].repeat(3, -1) if x.ndim == 2 else x
        return np.asarray(Image.open(out / s["file"]).convert("RGB"))

    test = sorted((s for s in samples if s["split"] == "test"), key=lambda s: s["id"])
    clean_test = clean.read_split("test")
    protected = np.stack([image(s) for s in test])
    change = np.abs(protected.astype(int) - clean_test.images)
    eps = read_perturbations(run).epsilon
    assert change.max() <= eps * 255 + 1e-6 and change.max() > 0
    assert [s["label"] for s in test] == clean_test.labels.tolist()
    # each test image: its nearest center in the run's surrogate feature space, applied as
    # generate applies a training image's
    cfg = load_config(run.config)
    surrogate = build_surrogate(cfg.surrogate.arch, run.surrogate)
    x = torch.from_numpy(clean_test.images).permute(0, 3, 1, 2)
    feats, _ = extract_features(surrogate, [(x, None, torch.arange(len(x)))],
                                torch.device("cpu"))
    nearest = torch.cdist(feats, read_clusters(run).centers).argmin(1)
    assert [s["cluster"] for s in test] == nearest.tolist()
    assert {s["cluster_assigned_by"] for s in test} == {"nearest center"}
    assert np.array_equal(protected, perturb_uint8(clean_test.images,
                                                   read_perturbations(run).deltas, nearest))
    train = {s["id"]: s for s in samples if s["split"] == "train"}
    assert np.array_equal(np.stack([image(train[i]) for i in range(len(train))]),
                          open_shards(run.unlearnable).read_split("train").images)


@pytest.mark.parametrize("fmt", ["imagefolder", "npz", "same-as-source"])
def test_train_only_gives_the_training_split_alone(flat_run, tmp_path, fmt):
    from tests.conftest import hpcue

    _, run, shards = flat_run
    out = tmp_path / "out"
    proc = hpcue("export", str(run.root), "--format", fmt, "--out", str(out),
                 "--even-if-unprotected", "--train-only")
    n = open_shards(shards).size("train")
    assert f"exported {n} images" in proc.stdout
    manifest = _manifest(out)
    assert manifest["split"] == "train" and manifest["splits"] == {"train": n}
    assert {s["split"] for s in manifest["samples"]} == {"train"}
    if fmt == "npz":
        with np.load(out / NPZ) as npz:
            assert sorted(npz.files) == ["train_images", "train_labels"]
    else:
        assert len(_files(out)) == n + 2
    assert "exported with `--train-only`" in (out / README).read_text()
