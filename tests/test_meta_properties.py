"""Property tests of the meta.json reader: whatever the file holds, ``open_shards`` returns a
ShardSet whose every shard path is a shard inside the directory, or raises one ShardError."""

import copy
import json
import re
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hpcue.data.shard_set import ShardSet, open_shards
from hpcue.data.shards import ShardError

SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])
SHA = "0" * 64
VALID = {
    "format_version": 1, "dataset": "digits", "classes": ["0", "1", "2"],
    "image_shape": [8, 8, 3], "image_dtype": "uint8",
    "splits": {
        "train": {"num_samples": 5, "shards": [
            {"file": "train-00000-of-00002.h5", "num_samples": 3, "sha256": SHA},
            {"file": "train-00001-of-00002.h5", "num_samples": 2, "sha256": SHA}]},
        "test": {"num_samples": 1, "shards": [
            {"file": "test-00000-of-00001.h5", "num_samples": 1, "sha256": SHA}]},
    },
    "grayscale": True, "recipe": {"seed": 0},
}
TRICKY_FILES = [
    "../train-00000-of-00002.h5", "/etc/passwd", "/tmp/train-00000-of-00002.h5", "..", ".",
    "train-00000-of-00002.h5/..", "sub/train-00000-of-00002.h5", "train-00000-of-00002.h5\x00",
    "train-00000-of-00002.h5\n", "~/train-00000-of-00002.h5", "train-0000-of-00002.h5",
    "test-00000-of-00001.h5", "train-00000-of-00002.h5 ", "C:\\train-00000-of-00002.h5",
    "train-\u0660\u0660\u0660\u0660\u0660-of-00002.h5",
]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                max_size=4),
    max_leaves=15,
)
file_names = (st.sampled_from(TRICKY_FILES) | st.text(max_size=30)
              | st.from_regex(r"\A(train|test|\.\.)[-/]\d{5}-of-\d{5}\.h5.{0,3}\Z"))


def _locations(value, where=()):
    """Every key path into a nested dict/list, the root included."""
    yield where
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _locations(item, (*where, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _locations(item, (*where, i))


def _set(meta, where, value):
    if not where:
        return value
    parent = meta
    for key in where[:-1]:
        parent = parent[key]
    parent[where[-1]] = value
    return meta


def _delete(meta, where):
    if not where:
        return {}
    parent = meta
    for key in where[:-1]:
        parent = parent[key]
    del parent[where[-1]]
    return meta


def _check(text: str | bytes) -> None:
    """The property: a ShardSet with every path a shard inside root, or a ShardError."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "set"
        root.mkdir()
        meta_path = root / "meta.json"
        if isinstance(text, bytes):
            meta_path.write_bytes(text)
        else:
            meta_path.write_text(text)
        try:
            shards = open_shards(root)
        except ShardError as exc:
            assert str(exc).startswith(str(meta_path))
            return
        assert isinstance(shards, ShardSet) and isinstance(shards.meta, dict)
        assert len(set(shards.classes)) == len(shards.classes) >= 2
        assert len(shards.image_shape) == 3
        for split in shards.splits:
            assert shards.size(split) >= 0
            for path in shards.paths(split):
                assert path.parent == root and path.resolve().parent == root.resolve()
                assert re.fullmatch(rf"{re.escape(split)}-\d{{5}}-of-\d{{5}}\.h5", path.name,
                                    re.ASCII)


@SETTINGS
@given(json_values)
def test_any_json_value(value):
    _check(json.dumps(value))


@SETTINGS
@given(st.binary(max_size=200))
def test_any_bytes(blob):
    _check(blob)


@SETTINGS
@given(st.data())
def test_a_mutated_valid_meta(data):
    meta = copy.deepcopy(VALID)
    for _ in range(data.draw(st.integers(1, 3))):
        where = data.draw(st.sampled_from(list(_locations(meta))))
        if data.draw(st.booleans()):
            meta = _set(meta, where, data.draw(json_values))
        elif where:
            meta = _delete(meta, where)
    _check(json.dumps(meta))


@SETTINGS
@given(st.sampled_from(["train", "test"]), st.integers(0, 1), file_names)
def test_a_valid_meta_with_any_shard_file(split, i, file):
    meta = copy.deepcopy(VALID)
    shards = meta["splits"][split]["shards"]
    shards[i % len(shards)]["file"] = file
    _check(json.dumps(meta))


def test_the_valid_meta_is_read():
    _check(json.dumps(VALID))
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "meta.json").write_text(json.dumps(VALID))
        shards = open_shards(Path(tmp))
        assert shards.meta == VALID and shards.size("train") == 5
