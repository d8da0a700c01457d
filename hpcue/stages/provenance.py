"""What each stage was built from: the slice of the config it reads, the files it read, and
where, when and with what software it ran.

Every stage record keeps all three, so a run directory can say what its results describe and a
figure taken from it can be cited with its provenance. A stage
command that would build on an earlier stage made under other settings (``hpcue generate --set
train.epsilon=...`` on perturbations made at another eps) is refused, naming the stage to rerun;
results.json then never reports settings other than the ones its artifacts were made with.
"""

from __future__ import annotations

import hashlib
import json
import platform
import socket
import subprocess
from collections import Counter
from datetime import datetime, timezone
from functools import cache
from pathlib import Path
from typing import Any

import lightning
import torch

import hpcue
from hpcue.config import RunConfig
from hpcue.data.meta_io import META
from hpcue.distributed import collectives
from hpcue.distributed.topology import Topology
from hpcue.io import file_sha256
from hpcue.training import speed


def file_digests(paths: dict[str, Path]) -> dict[str, str]:
    """sha256 of each file a stage read, by label (a shard directory: of its meta.json, which
    holds every shard's sha256); files that do not exist are left out."""
    out = {}
    for label, path in paths.items():
        target = path / META if path.is_dir() else path
        if target.is_file():
            out[label] = file_sha256(target)
    return out


def config_sha256(cfg: RunConfig) -> str:
    """The sha256 of the whole resolved config (what config.yaml holds), as sorted JSON."""
    blob = json.dumps(cfg.model_dump(mode="json"), sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


@cache
def git_commit() -> dict[str, Any]:
    """The commit of the checkout hpcue runs from (and whether it had changes); {} for an
    installed package or where git is missing."""
    source = Path(hpcue.__file__).resolve().parent.parent
    if not (source / ".git").exists():
        return {}
    try:
        head = subprocess.run(["git", "-C", str(source), "rev-parse", "HEAD"], text=True,
                              capture_output=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(source), "status", "--porcelain",
                                "--untracked-files=no"], text=True, capture_output=True,
                               timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {}
    return {"git_commit": head, "git_dirty": bool(dirty)}


def device_name(device: str) -> str:
    """A device as a person names it: the GPU's model, or the CPU's."""
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return f"cpu ({platform.processor() or platform.machine()})"


def environment(topo: Topology) -> dict[str, Any]:
    """Who ran a stage: hpcue and library versions, the hosts and devices of every rank, the
    speed options (a collective: every rank calls it)."""
    ranks = collectives.gather_objects((socket.gethostname(), device_name(topo.device)))
    return {
        "hpcue_version": hpcue.__version__, **git_commit(),
        "python": platform.python_version(), "torch": torch.__version__,
        "lightning": lightning.__version__, "cuda": torch.version.cuda,
        "hip": getattr(torch.version, "hip", None),
        "launcher": topo.launcher, "world_size": topo.world_size, "num_nodes": topo.num_nodes,
        "hosts": sorted({host for host, _ in ranks}),
        "devices": dict(Counter(device for _, device in ranks)),
        # the speed options in force (training/speed.py) and cuDNN's autotuning
        "speed": speed.current().as_record() | {
            "cudnn_benchmark": bool(torch.backends.cudnn.benchmark)},
    }


def now() -> str:
    """The current time, UTC, ISO 8601 to the second."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


