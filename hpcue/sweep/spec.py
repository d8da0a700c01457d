"""Sweep specs: data sets x global batch sizes x seeds (and lr rules, K, eps), as written.

A spec names configs (one per data set), the batch sizes and seeds to cross (and optionally lr
rules, K and eps), nodes per point and a machine profile (``machines.py``); ``points.py``
expands it into points.

Nothing is looked up relative to the current directory, so a sweep renders and runs from any
directory of an installed hpcue: a spec is a path or a shipped spec's name (``digits-local``);
its configs are shipped configs by name (``paper-pathmnist``) or paths from the spec's own
folder, and so are the path-valued keys of its overrides (``data.shards=...``).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal, get_args

from pydantic import BaseModel, Field, field_validator, model_validator

from hpcue.config import (
    PLAIN_NAME,
    ConfigError,
    RunConfig,
    parse_override,
    plain_name,
)
from hpcue.sweep.machines import Strict, read_model, scheduler_word
from hpcue.sweep.shipped import configs_dir, names, sweeps_dir


def parse_walltime(text: str) -> int:
    """'HH:MM:SS', 'HH:MM' or 'D-HH:MM:SS' -> minutes (rounded up)."""
    m = re.fullmatch(r"(?:(\d+)-)?(\d{1,3}):(\d{2})(?::(\d{2}))?", str(text).strip())
    if not m or int(m.group(3)) >= 60 or (m.group(4) and int(m.group(4)) >= 60):
        raise ValueError(f"malformed walltime {text!r}: expected HH:MM:SS, HH:MM or D-HH:MM:SS")
    days, hours, minutes, seconds = (int(g or 0) for g in m.groups())
    total = days * 1440 + hours * 60 + minutes + (1 if seconds else 0)
    if total <= 0:
        raise ValueError(f"walltime {text!r} is zero")
    return total


#: accounts that documentation and examples write in place of a real project (the shipped specs
#: once carried ABC123): one passes every check of form, and a scheduler then refuses the jobs
#: or, worse, charges them to a stranger's project; compared without case
PLACEHOLDER_ACCOUNTS = frozenset({
    "abc123", "xyz123", "abc000", "xxx", "xxxxxx", "project", "myproject", "my_project",
    "my-project", "your_project", "your-project", "account", "myaccount", "my_account",
    "my-account", "your_account", "your-account", "changeme", "change_me", "change-me",
    "todo", "fixme", "none", "null",
})


def placeholder_account(value: str | None) -> bool:
    """Whether ``value`` is one of ``PLACEHOLDER_ACCOUNTS``: a job script must not charge it."""
    return value is not None and value.lower() in PLACEHOLDER_ACCOUNTS


#: the shared-clusters job's default wall-time cap. The job is one inference pass of the
#: surrogate over the training set and K-means over its features: for the largest shipped set
#: (PathMNIST, 89,996 images at 224 px; ResNet-50 at a modest 500 images/s on one GPU) about
#: 3 minutes of features, and 10 inits x 300 iterations over 90k x 2048 features about 11
#: TFLOP, minutes even on the CPU: 10 minutes at most. An hour leaves six times that, for a slow
#: file system or queue start, since a requeued clusters job starts again from nothing.
CLUSTER_WALLTIME_MINUTES = 60

#: the spec's lists that are crossed into its points
AXES = ("configs", "global_batch_sizes", "seeds", "lr_scaling", "num_clusters", "epsilon")


def crossed(values: list | None) -> list | None:
    """A list crossed into the points (an axis, a variant's batches): an empty one would
    silently make no points (or drop the axis), and a repeated value two points of one name."""
    if values is None:
        return None
    if not values:
        raise ValueError("an empty list: give at least one value (or leave the key out)")
    repeated = sorted({str(v) for v in values if values.count(v) > 1})
    if repeated:
        raise ValueError(f"{', '.join(repeated)} given more than once")
    return values


class Variant(Strict):
    """One line of a study's figure: settings of its own (an optimizer, an lr rule, warmup),
    over its own batch sizes where it names them (default: the spec's)."""

    overrides: list[str] = []
    global_batch_sizes: list[int] | None = None

    _batches = field_validator("global_batch_sizes")(crossed)


class SweepSpec(Strict):
    name: str
    machine: str
    # a shipped config's name (paper-pathmnist), or a path from the spec's folder (x.yaml)
    configs: list[str]
    global_batch_sizes: list[int]
    seeds: list[int] = [0]
    lr_scaling: list[Literal["none", "linear", "sqrt"]] | None = None
    num_clusters: list[int] | None = None
    epsilon: list[float] | None = None
    nodes: int = Field(1, ge=1)
    ranks_per_node: int | None = Field(None, ge=1)  # default: the machine's
    # one wall time for every job, or a map {config path: wall time, default: wall time}
    walltime: str | dict[str, str] = "01:00:00"
    # measured stage-1 images per second of one point's whole job, by config path (or
    # "default"): render then refuses a point whose epoch cannot fit in its wall time
    images_per_second: dict[str, float] = {}
    account: str | None = None
    # the shared-clusters job's wall time (one pass of the surrogate and K-means: far less than
    # a point's); default: the point's, at most CLUSTER_WALLTIME_MINUTES
    cluster_walltime: str | None = None
    overrides: list[str] = []
    # clusters computed once per cluster config and shared by every point (a first job under
    # Slurm/LSF that the points wait for); false: each point clusters on its own
    share_clusters: bool = True
    # named settings crossed with the other axes, one line each in the report's figures
    # (optimizers, lr rules, warmup); a variant may name its own batch sizes
    variants: dict[str, Variant] | None = None
    # what "the same training" means across batch sizes: the same number of epochs (the
    # paper's reading: a larger batch takes fewer steps) or of optimizer steps (``steps``)
    training: Literal["epochs", "steps"] = "epochs"
    steps: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _training_reading(self) -> SweepSpec:
        if self.training == "steps" and self.steps is None:
            raise ValueError("training: steps needs steps: N, the optimizer steps every point "
                             "takes")
        if self.training == "epochs" and self.steps is not None:
            raise ValueError(f"steps: {self.steps} is the other reading: set training: steps "
                             f"too, or drop steps (under training: epochs, train.epochs decides)")
        return self

    @model_validator(mode="after")
    def _axes_win(self) -> SweepSpec:
        """A key the spec sets for every point (an axis, the seed, the reading's steps) in
        ``overrides`` or a variant would be overwritten without a word: refused."""
        owned = {"train.global_batch_size": "global_batch_sizes", "seed": "seeds",
                 "train.steps": "training: steps, steps: N"}
        for key, axis in (("train.lr_scaling", "lr_scaling"),
                          ("cluster.num_clusters", "num_clusters"), ("train.epsilon", "epsilon")):
            if getattr(self, axis) is not None:
                owned[key] = axis
        sources = [("overrides", self.overrides)] + [
            (f"variants.{name}.overrides", v.overrides)
            for name, v in (self.variants or {}).items()]
        for where, items in sources:
            for item in items:
                key = item.partition("=")[0].strip()
                if key in owned:
                    raise ValueError(f"{where}: {key} is set for every point by the spec "
                                     f"({owned[key]}): set it there, not in overrides")
        return self

    @field_validator("variants")
    @classmethod
    def _variant_names(cls, value: dict[str, Variant] | None) -> dict[str, Variant] | None:
        if value is not None:
            if not value:
                raise ValueError("an empty mapping: name at least one variant (or leave the "
                                 "key out)")
            for name in value:
                plain_name(name)
        return value

    @field_validator("walltime")
    @classmethod
    def _walltime(cls, value: str | dict[str, str]) -> str | dict[str, str]:
        for text in ([value] if isinstance(value, str) else value.values()):
            parse_walltime(text)
        return value

    @field_validator("cluster_walltime")
    @classmethod
    def _cluster_walltime(cls, value: str | None) -> str | None:
        if value is not None:
            parse_walltime(value)
        return value

    @model_validator(mode="after")
    def _maps_name_configs(self) -> SweepSpec:
        known = {str(c) for c in self.configs} | {"default"}
        for key, mapping in (("walltime", self.walltime), ("images_per_second",
                                                           self.images_per_second)):
            if isinstance(mapping, dict):
                unknown = sorted(set(mapping) - known)
                if unknown:
                    raise ValueError(f"{key}: {', '.join(unknown)} is not one of the configs "
                                     f"({', '.join(sorted(known - {'default'}))}) or 'default'")
        if isinstance(self.walltime, dict) and "default" not in self.walltime:
            missing = sorted({str(c) for c in self.configs} - set(self.walltime))
            if missing:
                raise ValueError(f"walltime: no wall time for {', '.join(missing)} (add it, or "
                                 f"a 'default')")
        return self

    def walltime_minutes(self, config: str) -> int:
        w = self.walltime
        return parse_walltime(w if isinstance(w, str) else w.get(str(config), w.get("default")))

    def cluster_walltime_minutes(self, point_minutes: int) -> int:
        """The clusters job's wall time: the spec's ``cluster_walltime``, else its point's
        (``point_minutes``) capped at ``CLUSTER_WALLTIME_MINUTES``."""
        if self.cluster_walltime is not None:
            return parse_walltime(self.cluster_walltime)
        return min(point_minutes, CLUSTER_WALLTIME_MINUTES)

    def rate(self, config: str) -> float | None:
        r = self.images_per_second
        return r.get(str(config), r.get("default"))

    _names = field_validator("name", "machine")(plain_name)

    @field_validator("account")
    @classmethod
    def _account(cls, value: str | None) -> str | None:
        return value if value is None else scheduler_word(value)

    _axis = field_validator(*AXES)(crossed)


def find_spec(spec: str | Path) -> Path:
    """A sweep spec's file: ``spec`` if it is one, else the shipped spec of that name."""
    if Path(spec).is_file():
        return Path(spec)
    name = str(spec).removesuffix(".yaml")
    if PLAIN_NAME.fullmatch(name) and (sweeps_dir() / f"{name}.yaml").is_file():
        return sweeps_dir() / f"{name}.yaml"
    raise ConfigError(f"sweep spec not found: {spec} (not a file, nor a shipped spec: "
                      f"{', '.join(names(sweeps_dir())) or 'none'})")


def load_spec(path: Path) -> SweepSpec:
    return read_model(SweepSpec, path, "sweep spec")


def job_path(path: Path) -> Path:
    """``path`` as a job script names it: normalized, and relative to the current directory when
    it lies under it (scripts run where they were submitted; their run directories are relative
    to it too), so scripts rendered in a checkout name no machine's absolute paths."""
    path = Path(os.path.normpath(path))
    if path.is_absolute() and path.is_relative_to(Path.cwd()):
        return path.relative_to(Path.cwd())
    return path


def config_path(entry: str, folder: Path) -> Path:
    """Where a spec's config entry is: a plain name without .yaml is a shipped config (so a
    copied spec still finds it), anything else a path from the spec's ``folder``."""
    if PLAIN_NAME.fullmatch(entry) and not entry.endswith((".yaml", ".yml")):
        path = configs_dir() / f"{entry}.yaml"
        if not path.is_file():
            raise ConfigError(f"configs: {entry!r} is not a shipped config (shipped: "
                              f"{', '.join(names(configs_dir()))}); a config of your own is "
                              f"named by its path, ending .yaml, from the spec's folder")
        return job_path(path)
    return job_path(folder / entry)


def _path_keys(model: type[BaseModel], prefix: str = "") -> set[str]:
    """The dotted keys of a config model whose values are paths."""
    keys: set[str] = set()
    for name, info in model.model_fields.items():
        kind = info.annotation
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            keys |= _path_keys(kind, f"{prefix}{name}.")
        elif kind is Path or Path in get_args(kind):
            keys.add(f"{prefix}{name}")
    return keys


#: run-config keys whose values are paths (data.root, data.shards, surrogate.weights, ...)
PATH_KEYS = frozenset(_path_keys(RunConfig))


def paths_from(folder: Path, overrides: list[str]) -> list[str]:
    """The overrides with every relative path value (``PATH_KEYS``) taken from ``folder``, the
    spec's own, as its configs are; ``~`` paths and other values as they are."""
    out = []
    for item in overrides:
        keys, value = parse_override(item)
        key = ".".join(keys)
        if (key in PATH_KEYS and isinstance(value, str) and value and not value.startswith("~")
                and not Path(value).is_absolute()):
            item = f"{key}={job_path(folder / value)}"
        out.append(item)
    return out
