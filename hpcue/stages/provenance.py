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
from hpcue.config import ConfigError, RunConfig, flatten
from hpcue.data.meta_io import META
from hpcue.distributed import collectives
from hpcue.distributed.topology import Topology
from hpcue.io import file_sha256
from hpcue.stages.rundir import STAGES, RunDir

# the slices live in slices.py (no torch: a sweep hashes them); still importable from here
from hpcue.stages.slices import SLICES, config_slice, slice_digest  # noqa: F401


def file_digests(paths: dict[str, Path]) -> dict[str, str]:
    """sha256 of each file a stage read, by label (a shard directory: of its meta.json, which
    holds every shard's sha256); files that do not exist are left out."""
    out = {}
    for label, path in paths.items():
        target = path / META if path.is_dir() else path
        if target.is_file():
            out[label] = file_sha256(target)
    return out


def flat_config(cfg: RunConfig) -> dict[str, Any]:
    """The whole config as ``{dotted key: value}``, JSON-ready."""
    return flatten(cfg.model_dump(mode="json"))


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


def _device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return f"cpu ({platform.processor() or platform.machine()})"


def environment(topo: Topology) -> dict[str, Any]:
    """Who ran a stage: hpcue and library versions, the hosts and devices of every rank (a
    collective: every rank calls it)."""
    ranks = collectives.gather_objects((socket.gethostname(), _device_name(topo.device)))
    return {
        "hpcue_version": hpcue.__version__, **git_commit(),
        "python": platform.python_version(), "torch": torch.__version__,
        "lightning": lightning.__version__, "cuda": torch.version.cuda,
        "hip": getattr(torch.version, "hip", None),
        "launcher": topo.launcher, "world_size": topo.world_size, "num_nodes": topo.num_nodes,
        "hosts": sorted({host for host, _ in ranks}),
        "devices": dict(Counter(device for _, device in ranks)),
    }


def now() -> str:
    """The current time, UTC, ISO 8601 to the second."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# how the work is spread, not what it computes: a run resumes under the other value
EXECUTION_ONLY = frozenset({"train.generator_parallel"})


def changed_keys(recorded: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """The dotted keys whose values differ, but those that only say how the work is spread."""
    return sorted(k for k in recorded.keys() | now.keys()
                  if recorded.get(k) != now.get(k) and k not in EXECUTION_ONLY)


def check_earlier_stages(cfg: RunConfig, run: RunDir, stage: str) -> None:
    """Refuse to run ``stage`` on top of an earlier stage made under other settings, naming the
    keys that differ and the stage to rerun (the earliest such stage)."""
    for earlier in STAGES[:STAGES.index(stage)]:
        path = run.stage_record(earlier)
        if not path.is_file():
            continue
        recorded = run.read_record(earlier).get("config")
        if recorded is None:  # written before records kept their slice: nothing to compare
            continue
        keys = changed_keys(recorded, config_slice(cfg, earlier))
        if keys:
            shown = ", ".join(f"{k} ({recorded.get(k)!r} -> {config_slice(cfg, earlier).get(k)!r})"
                              for k in keys[:4])
            raise ConfigError(f"{run.root}: stage {earlier} was made with other settings than "
                              f"`hpcue {stage}` would build on: {shown}; rerun `hpcue {earlier} "
                              f"--out {run.root}` with them first (it clears the later stages)")
