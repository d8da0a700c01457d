"""Surrogate weights that ship inside the package, each with its sha256 and its record.

The embedded default's surrogate is the small CNN trained on MNIST-5k (other data: MNIST's
labels, never the protected set's); ``hpcue surrogate mnist5k`` rebuilds it from a seed
(hpcue/training/mnist_surrogate.py). Its record (``<file>.json``) says what it saw, so
``results.json`` can.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from hpcue.errors import InputError
from hpcue.io import file_sha256

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


@dataclass(frozen=True)
class ShippedWeights:
    file: str
    sha256: str

    @property
    def path(self) -> Path:
        return WEIGHTS_DIR / self.file


#: surrogate.pretraining value -> the file that holds it
SHIPPED: dict[str, ShippedWeights] = {
    "mnist5k": ShippedWeights(
        "small_cnn-mnist5k.pt",
        "61bd93ee3cb7e45bcc94ec46b4438aeff8ad16fc76babb18ddc75c195e6557f8"),
}


def shipped_weights(name: str) -> Path:
    """The shipped file, checked against its sha256: a damaged install is an error, not a
    different surrogate."""
    entry = SHIPPED[name]
    if not entry.path.is_file():
        raise InputError(f"the shipped surrogate weights {entry.path} are missing: reinstall "
                         f"hpcue (or rebuild them: hpcue surrogate mnist5k --out FILE)")
    found = file_sha256(entry.path)
    if found != entry.sha256:
        raise InputError(f"{entry.path}: sha256 {found} is not the shipped {entry.sha256}: "
                         f"the install is damaged; reinstall hpcue")
    return entry.path


def weights_record(path: Path) -> dict | None:
    """The record written beside a weights file (``<file>.json``), if there is one."""
    sidecar = Path(path).with_suffix(".json")
    if not sidecar.is_file():
        return None
    try:
        record = json.loads(sidecar.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{sidecar}: not a readable weights record ({exc})") from None
    if not isinstance(record, dict):
        raise InputError(f"{sidecar}: a weights record must be a JSON object")
    return record
