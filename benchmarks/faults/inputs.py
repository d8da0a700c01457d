"""Fabrication helpers: the crafted, damaged and malformed inputs the tries run on.

Pickles whose loading runs code, truncated or random files, JPEG and PNG files, image
folders, MedMNIST archives, YAML, a held lock and a tmpfs. The shard-directory damage the
tests share lives in ``tests/fabricate.py``.
"""

from __future__ import annotations

import fcntl
import json
import os
import pickle
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import yaml

from tests import fabricate

from .core import RESULTS

#: the tries' images: small, so that a try's prepare takes no time
SIZE = (24, 24)


class RunsCode:
    """Unpickling this runs ``touch marker``: what a crafted checkpoint or artifact would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def write_pickle(path: Path, obj: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        pickle.dump(obj, fh)


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])


def random_bytes(path: Path, n: int = 4096) -> None:
    path.write_bytes(np.random.default_rng(7).integers(0, 256, n, dtype=np.uint8).tobytes())


def flip_image_byte(path: Path) -> None:
    """Damage pixel data only: the shard still opens, with the right shape and ids."""
    with h5py.File(path, "r") as f:
        offset = f["images"].id.get_chunk_info(0).byte_offset
    data = bytearray(path.read_bytes())
    data[offset + 5] ^= 0xFF
    path.write_bytes(bytes(data))


def jpeg(path: Path, seed: int, size: tuple[int, int] = SIZE) -> None:
    fabricate.jpeg(path, seed, size)


def image_folder(root: Path, classes: tuple[str, ...] = ("cat", "dog"),
                 per_class: int = 5) -> Path:
    return fabricate.image_folder(root, classes, per_class, SIZE)


def medmnist_npz(root: Path, labels: Callable[[int], np.ndarray] | None = None,
                 drop: str | None = None, empty: str | None = None) -> Path:
    """bloodmnist.npz (8 classes, 28 px) with 12 images a split."""
    rng = np.random.default_rng(0)
    arrays = {}
    for split in ("train", "val", "test"):
        n = 0 if split == empty else 12
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, 28, 28, 3), dtype=np.uint8)
        arrays[f"{split}_labels"] = (labels(n) if labels else (np.arange(n) % 8)[:, None]
                                     .astype(np.uint8))
    arrays.pop(drop, None)
    root.mkdir(parents=True, exist_ok=True)
    np.savez(root / "bloodmnist.npz", **arrays)
    return root


def write_yaml(path: Path, data: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data))
    return path


def read_finite_json(path: Path) -> dict:
    """A JSON file that must hold no NaN or Infinity (ValueError if it does)."""
    def refuse(name: str) -> None:
        raise ValueError(f"{path} holds {name}")
    return json.loads(path.read_text(), parse_constant=refuse)


def results_problem(run: Path) -> tuple[str, str] | None:
    """Why a run's results.json is not a sane result (None: it is)."""
    path = run / "results.json"
    if not path.is_file():
        return "silent wrong", f"{path} missing after exit 0"
    try:
        results = read_finite_json(path)
    except ValueError as exc:
        return "silent wrong", str(exc)
    for key in ("clean_test_acc", "unlearnable_test_acc", "cluster_purity"):
        value = results.get(key)
        if not isinstance(value, float | int) or not 0 <= value <= 1:
            return "silent wrong", f"{path}: {key} is {value!r}"
    return None


def protect_run(run: Path) -> list[Path]:
    return [run / name for name in RESULTS]


def hold_lock(path: Path) -> Callable[[], None]:
    """Hold ``path``'s advisory lock as an hpcue command does, naming this process."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"hpcue on {socket.gethostname()}, pid {os.getpid()}\n".encode(), 0)
    return lambda: os.close(fd)


def mount_tmpfs(path: Path, size: str) -> Callable[[], None]:
    path.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                   check=True, capture_output=True)
    return lambda: subprocess.run(["umount", str(path)], capture_output=True)


def user_file(path: Path) -> Path:
    path.write_text("a user's file\n")
    return path
