"""Shard directory tries: ``hpcue data verify`` / ``data info`` of damaged 8-px digits.

Each damage (meta.json, a shard's datasets, a missing or escaping shard) must be one error
naming the file or key, with the directory and any file outside it unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from tests.fabricate import edit_meta, fix_sha, rewrite_shard

from .core import SHARD, Case, Ctx, Try
from .inputs import random_bytes, truncate


def verify_try(name: str, damage: Callable[[Path, Ctx], object], *expect: str,
               command: str = "verify") -> Try:
    """``hpcue data verify`` of the 8-px digits, damaged: one error naming the file or key, and
    the directory (an input) and any file outside it unchanged."""
    def setup(ctx: Ctx) -> Case:
        d = ctx.digits_copy()
        victim = ctx.work / SHARD
        victim.write_text("the user's own file\n")
        damage(d, ctx)
        return Case(["data", command, str(d)], guard=[victim])
    return Try(f"data {command}: {name}", setup, expect, needs=("digits",))


def _set_shard(file: str) -> Callable[[Path, Ctx], None]:
    def damage(d: Path, ctx: Ctx) -> None:
        value = file.replace("{work}", str(ctx.work))
        edit_meta(d, lambda m: m["splits"]["train"]["shards"][0].update(file=value))
    return damage


def verify_tries() -> list[Try]:
    def labels(values: Callable[[int], np.ndarray]) -> Callable[[Path, Ctx], None]:
        return lambda d, ctx: rewrite_shard(d, SHARD, labels=values(674))

    def one_class(d: Path, ctx: Ctx) -> None:
        rewrite_shard(d, SHARD, labels=np.zeros(674, np.int64))
        rewrite_shard(d, "train-00001-of-00002.h5", labels=np.zeros(673, np.int64))

    meta = "meta.json"
    return [
        verify_try("a shard file ../x.h5 (outside the directory)", _set_shard(f"../{SHARD}"),
                   "splits.train.shards[0].file", f"../{SHARD}"),
        verify_try("a shard file that is an absolute path", _set_shard(f"{{work}}/{SHARD}"),
                   "splits.train.shards[0].file"),
        verify_try("meta.json that is a JSON list",
                   lambda d, ctx: (d / meta).write_text("[1, 2]"), meta, "JSON object"),
        verify_try("meta.json without classes", lambda d, ctx: edit_meta(
            d, lambda m: m.pop("classes")), meta, "classes"),
        verify_try("meta.json not JSON", lambda d, ctx: (d / meta).write_text("{"), meta),
        verify_try("meta.json not UTF-8", lambda d, ctx: (d / meta).write_bytes(b'{"x": "\xff"}'),
                   meta),
        verify_try("meta.json nested 100000 deep",
                   lambda d, ctx: (d / meta).write_text("[" * 100000), meta),
        verify_try("meta.json format_version 2", lambda d, ctx: edit_meta(
            d, lambda m: m.update(format_version=2)), "format_version"),
        verify_try("meta.json image_shape 8 x 8 x 1", lambda d, ctx: edit_meta(
            d, lambda m: m.update(image_shape=[8, 8, 1])), "image_shape"),
        verify_try("meta.json counts that do not add up", lambda d, ctx: edit_meta(
            d, lambda m: m["splits"]["train"].update(num_samples=5)), "num_samples"),
        verify_try("one shard listed twice", lambda d, ctx: edit_meta(
            d, lambda m: m["splits"]["test"]["shards"][0].update(
                file=m["splits"]["test"]["shards"][1]["file"])), "listed twice"),
        verify_try("an HDF5 dataset renamed imgs (checksum fixed)", lambda d, ctx: rewrite_shard(
            d, SHARD, images=None, imgs=np.zeros((674, 8, 8, 3), np.uint8)), SHARD, "'images'"),
        verify_try("labels beyond the classes (checksum fixed)",
                   labels(lambda n: np.full(n, 12, np.int64)), SHARD, "labels"),
        verify_try("float labels (checksum fixed)", labels(lambda n: np.zeros(n, np.float32)),
                   SHARD, "labels"),
        verify_try("repeated sample ids (checksum fixed)", lambda d, ctx: rewrite_shard(
            d, SHARD, index=np.zeros(674, np.int64)), "sample ids"),
        verify_try("images of another size (checksum fixed)", lambda d, ctx: rewrite_shard(
            d, SHARD, images=np.zeros((674, 4, 4, 3), np.uint8)), SHARD, "images"),
        verify_try("random bytes as a shard (checksum fixed)", lambda d, ctx: (
            random_bytes(d / SHARD), fix_sha(d, SHARD)), SHARD),
        verify_try("a truncated shard", lambda d, ctx: truncate(d / SHARD), SHARD, "checksum"),
        verify_try("a missing shard", lambda d, ctx: (d / SHARD).unlink(), SHARD, "missing"),
        verify_try("an empty train split", lambda d, ctx: edit_meta(
            d, lambda m: m["splits"].update(train={"num_samples": 0, "shards": []})),
            "'train'", "empty"),
        verify_try("no test split", lambda d, ctx: edit_meta(d, lambda m: m["splits"].pop(
            "test")), "'test'"),
        verify_try("a one-class training split (checksums fixed)", one_class, "only class"),
        Try("data verify: a directory that does not exist", lambda ctx: Case(
            ["data", "verify", str(ctx.work / "nope")]), ("nope", "meta.json")),
        verify_try("meta.json that is a JSON list", lambda d, ctx: (d / meta).write_text("[]"),
                   meta, command="info"),
    ]

