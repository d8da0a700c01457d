"""Raw data set tries: ``hpcue data prepare`` of malformed inputs.

Image folders (one class, bombs, broken JPEGs), MedMNIST archives with bad labels or splits,
and ``--out`` folders that hold another recipe or are a file.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from tests.fabricate import png_header

from .core import Case, Ctx, Try
from .inputs import image_folder, jpeg, medmnist_npz, random_bytes, truncate, user_file


def prepare_try(name: str, raw: Callable[[Ctx], Path | None], dataset: str, *expect: str,
                options: tuple[str, ...] = ("--image-size", "16")) -> Try:
    def setup(ctx: Ctx) -> Case:
        root = raw(ctx)
        out = ctx.work / "out"
        args = ["data", "prepare", dataset, "--out", str(out), *options]
        if root is not None:
            args += ["--root", str(root)]
        return Case(args, out=[out])
    return Try(f"data prepare: {name}", setup, expect)


def prepare_tries() -> list[Try]:
    def folder(**kw) -> Callable[[Ctx], Path]:
        return lambda ctx: image_folder(ctx.work / "raw", **kw)

    def with_file(write: Callable[[Path], object]) -> Callable[[Ctx], Path]:
        def make(ctx: Ctx) -> Path:
            root = image_folder(ctx.work / "raw")
            write(root / "cat")
            return root
        return make

    def split_folders(train: tuple[str, ...], test: tuple[str, ...] | None):
        def make(ctx: Ctx) -> Path:
            image_folder(ctx.work / "raw" / "train", classes=train)
            if test is not None:
                image_folder(ctx.work / "raw" / "test", classes=test)
            return ctx.work / "raw"
        return make

    def loose_images(ctx: Ctx) -> Path:
        for i in range(4):
            jpeg(ctx.work / "raw" / f"{i}.jpg", seed=i)
        return ctx.work / "raw"

    def empty_classes(ctx: Ctx) -> Path:
        for name in ("cat", "dog"):
            (ctx.work / "raw" / name).mkdir(parents=True)
        return ctx.work / "raw"

    def npz(**kw) -> Callable[[Ctx], Path]:
        return lambda ctx: medmnist_npz(ctx.work / "raw", **kw)

    def npz_random(ctx: Ctx) -> Path:
        (ctx.work / "raw").mkdir()
        random_bytes(ctx.work / "raw" / "bloodmnist.npz")
        return ctx.work / "raw"

    def other_recipe(ctx: Ctx) -> Case:
        d = ctx.digits_copy()
        return Case(["data", "prepare", "digits", "--image-size", "16", "--shards", "2",
                     "--out", str(d)])

    def a_file(ctx: Ctx) -> Case:
        target = user_file(ctx.work / "afile")
        return Case(["data", "prepare", "digits", "--image-size", "8", "--out", str(target)])

    float_labels = npz(labels=lambda n: (np.arange(n) % 8 + 0.5)[:, None].astype(np.float32))
    medmnist = "medmnist:bloodmnist"
    return [
        prepare_try("an image folder of one class", folder(classes=("cat",), per_class=6),
                    "imagefolder", "two or more"),
        prepare_try("an image folder with train/ but no test/", split_folders(("a", "b"), None),
                    "imagefolder", "'test'"),
        prepare_try("train/ and test/ with other classes", split_folders(("a", "b"), ("a", "c")),
                    "imagefolder", "differ"),
        prepare_try("a decompression-bomb PNG (100000 x 100000)", with_file(
            lambda d: png_header(d / "bomb.png", 100_000, 100_000)), "imagefolder", "bomb.png"),
        prepare_try("random bytes named x.jpg", with_file(lambda d: random_bytes(d / "x.jpg")),
                    "imagefolder", "x.jpg"),
        prepare_try("a truncated JPEG", with_file(lambda d: (
            jpeg(d / "half.jpg", 9, (64, 64)), truncate(d / "half.jpg"))), "imagefolder",
            "half.jpg"),
        prepare_try("class folders without images", empty_classes, "imagefolder",
                    "no images"),
        prepare_try("an image folder that does not exist", lambda ctx: ctx.work / "nope",
                    "imagefolder", "nope"),
        prepare_try("MedMNIST .npz with float labels (0.5, 1.5, ...)", float_labels, medmnist,
                    "labels"),
        prepare_try("MedMNIST .npz with labels beyond the classes",
                    npz(labels=lambda n: np.full((n, 1), 20, np.int64)), medmnist, "labels"),
        prepare_try("MedMNIST .npz of random bytes", npz_random, medmnist, "bloodmnist.npz"),
        prepare_try("MedMNIST .npz with an empty train split", npz(empty="train"), medmnist,
                    "empty"),
        prepare_try("--image-size 30",
                    lambda ctx: None, "digits", "--image-size", options=("--image-size", "30")),
        prepare_try("an unknown data set name", lambda ctx: None, "nope", "nope"),
        Try("data prepare: --out holding another recipe", other_recipe, ("already holds",),
            needs=("digits",)),
        Try("data prepare: --out that is a regular file", a_file, ("afile",)),
    ]

