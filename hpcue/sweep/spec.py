"""Sweep specs and machine profiles: data sets x global batch sizes x seeds, as job points.

A spec names configs (one per data set), the batch sizes and seeds to cross (and optionally lr
rules, K and eps), nodes per point and a machine profile. Every point is validated as a full run
config before anything is rendered or submitted.

Nothing is looked up relative to the current directory, so a sweep renders and runs from any
directory of an installed hpcue: a spec is a path or a shipped spec's name (``digits-local``);
its configs are shipped configs by name (``paper-pathmnist``) or paths from the spec's own
folder, and so are the path-valued keys of its overrides (``data.shards=...``); a machine
profile comes from the user's folders (``--machines``, else ``$HPCUE_MACHINES``), then the
shipped ones (``shipped.py``).

Every value that reaches a job script is checked here, on loading, against what the scheduler
accepts (``plain_name``, ``scheduler_word``, ``one_line``), and again when it is rendered: a
newline in an account would start a command of its own and end the ``#SBATCH``/``#BSUB`` block.
A machine profile's ``launch`` and ``setup`` lines are shell code: the profile is trusted code
that the user chose, like a script they run, so those lines are only held to one line each.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import product
from pathlib import Path
from typing import Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from hpcue.config import (
    PLAIN_NAME,
    ConfigError,
    RunConfig,
    RuntimeConfig,
    format_errors,
    load_config,
    parse_override,
    plain_name,
    read_yaml_mapping,
)
from hpcue.data.importers import digits
from hpcue.data.registry import importer
from hpcue.data.shards import META, open_shards
from hpcue.sweep.shipped import configs_dir, machines_dir, names, sweeps_dir

#: the user's machine-profile folders when --machines is not given (several: ':'-separated)
MACHINES_ENV = "HPCUE_MACHINES"
#: the placeholders a launch line may use
LAUNCH_FIELDS = ("world_size", "ranks_per_node", "nodes", "cpus_per_task")


#: one value of a #SBATCH/#BSUB directive (account, queue, one partition): what Slurm and LSF
#: take in names, and nothing a shell or the directive parser reads as something else
SCHEDULER_WORD = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]*")
#: C0 control characters but the tab, and DEL: a newline or carriage return ends a script line
CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")



def scheduler_word(value: str) -> str:
    """``value`` if a scheduler directive can take it as one word (``SCHEDULER_WORD``)."""
    if not SCHEDULER_WORD.fullmatch(value):
        raise ValueError(f"{value!r} is not a plain name: letters, digits, _ . + - only, "
                         f"not starting with . + -")
    return value


def scheduler_words(value: str) -> str:
    """A comma-separated list of scheduler words (Slurm takes several partitions so)."""
    for word in value.split(","):
        if not SCHEDULER_WORD.fullmatch(word):
            raise ValueError(f"{value!r} is not a comma-separated list of plain names: "
                             f"letters, digits, _ . + - only, not starting with . + -")
    return value


def one_line(value: str) -> str:
    """A line of a profile's own shell code: anything but a control character (a newline)."""
    if CONTROL.search(value):
        raise ValueError(f"{value!r} holds a control character (a newline?): one line each")
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MachineProfile(_Strict):
    """A machine: its scheduler, sizes, and the shell lines each job runs (trusted code)."""

    name: str
    scheduler: Literal["slurm", "lsf"]
    gpus_per_node: int = Field(ge=0)
    cores_per_node: int = Field(ge=1)
    ranks_per_node: int = Field(ge=1)
    cpus_per_task: int = Field(1, ge=1)
    # srun/jsrun line; {world_size}, {ranks_per_node}, {nodes}, {cpus_per_task}
    launch: str
    account_required: bool = False
    partition: str | None = None      # Slurm
    queue: str | None = None          # LSF
    setup: list[str] = []             # environment lines: modules, venv
    # every point's runtime.max_micro_batch unless the spec sets it: what one device holds
    max_micro_batch: int | Literal["auto"] | None = None
    # every point's runtime.precision unless the spec sets it: what the GPUs compute fast in
    precision: str | None = None

    @field_validator("launch")
    @classmethod
    def _launch(cls, value: str) -> str:
        try:
            value.format(**dict.fromkeys(LAUNCH_FIELDS, 2))
        except Exception as exc:  # str.format raises several kinds; each is this one error
            fields = ", ".join(f"{{{f}}}" for f in LAUNCH_FIELDS)
            raise ValueError(f"launch line {value!r} may only use {fields} (literal braces "
                             f"doubled: {{{{ }}}}); failed on {exc}") from None
        return one_line(value)

    @field_validator("precision")
    @classmethod
    def _precision(cls, value: str | None) -> str | None:
        """A precision the run config takes (checked by it: one list of them)."""
        if value is not None:
            try:
                RuntimeConfig(precision=value)
            except ValidationError as exc:
                raise ValueError(exc.errors()[0]["msg"]) from None
        return value

    _name = field_validator("name")(plain_name)

    @field_validator("queue", "partition")
    @classmethod
    def _scheduler_names(cls, value: str | None, info: ValidationInfo) -> str | None:
        check = scheduler_words if info.field_name == "partition" else scheduler_word
        return value if value is None else check(value)

    @field_validator("setup")
    @classmethod
    def _setup(cls, lines: list[str]) -> list[str]:
        return [one_line(line) for line in lines]


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


#: the spec's lists that are crossed into its points
AXES = ("configs", "global_batch_sizes", "seeds", "lr_scaling", "num_clusters", "epsilon")


class SweepSpec(_Strict):
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
    overrides: list[str] = []
    # clusters computed once per cluster config and shared by every point (a first job under
    # Slurm/LSF that the points wait for); false: each point clusters on its own
    share_clusters: bool = True

    @field_validator("walltime")
    @classmethod
    def _walltime(cls, value: str | dict[str, str]) -> str | dict[str, str]:
        for text in ([value] if isinstance(value, str) else value.values()):
            parse_walltime(text)
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

    def rate(self, config: str) -> float | None:
        r = self.images_per_second
        return r.get(str(config), r.get("default"))

    _names = field_validator("name", "machine")(plain_name)

    @field_validator("account")
    @classmethod
    def _account(cls, value: str | None) -> str | None:
        return value if value is None else scheduler_word(value)

    @field_validator(*AXES)
    @classmethod
    def _axis(cls, values: list | None) -> list | None:
        """An axis crossed into the points: an empty one would silently make no points (or
        drop the axis), and a repeated value two points of one name."""
        if values is None:
            return None
        if not values:
            raise ValueError("an empty list: give at least one value (or leave the key out)")
        repeated = sorted({str(v) for v in values if values.count(v) > 1})
        if repeated:
            raise ValueError(f"{', '.join(repeated)} given more than once")
        return values


@dataclass
class Point:
    name: str
    config: Path
    overrides: list[str]
    nodes: int
    ranks_per_node: int
    run_config: RunConfig = field(repr=False)
    walltime_minutes: int = 60

    @property
    def world_size(self) -> int:
        return self.nodes * self.ranks_per_node


@dataclass
class Sweep:
    spec: SweepSpec
    machine: MachineProfile
    points: list[Point]
    source: Path
    #: a point dropped because it runs exactly what an earlier one runs -> that point's name
    #: (e.g. lr_scaling sqrt at the base batch is the same run as none)
    same_as: dict[str, str] = field(default_factory=dict)
    #: what the user should know about how the sweep was read (a profile replacing a shipped one)
    notes: list[str] = field(default_factory=list)

    def digest(self) -> str:
        """Identifies what the sweep directory was written for."""
        blob = json.dumps({"spec": self.spec.model_dump(mode="json"),
                           "machine": self.machine.model_dump(mode="json")}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _errors(exc: ValidationError, source: Path) -> ConfigError:
    return ConfigError(format_errors(exc, str(source)))


def user_machine_dirs(given: Path | Sequence[Path] | None = None) -> list[Path]:
    """The user's profile folders, searched before the shipped ones: ``given`` (--machines),
    else ``$HPCUE_MACHINES``. A folder that is not there is an error, not a silent skip."""
    if given is None:
        where = f"${MACHINES_ENV}"
        folders = [Path(p) for p in os.environ.get(MACHINES_ENV, "").split(os.pathsep) if p]
    else:
        where = "--machines"
        folders = [Path(given)] if isinstance(given, (str, Path)) else [Path(p) for p in given]
    for folder in folders:
        if not folder.is_dir():
            raise ConfigError(f"{where}: {folder} is not a folder (of machine profiles)")
    return folders


def find_machine(name: str, user_dirs: Sequence[Path] = ()) -> Path:
    """The profile ``<name>.yaml`` in the user's folders, in order, then the shipped ones."""
    folders = [*user_dirs, machines_dir()]
    for folder in folders:
        if (folder / f"{name}.yaml").is_file():
            return folder / f"{name}.yaml"
    known = sorted({n for folder in folders for n in names(folder)})
    looked = ", ".join([*map(str, user_dirs), f"{machines_dir()} (shipped)"])
    raise ConfigError(f"unknown machine profile {name!r} (known: {', '.join(known) or 'none'}; "
                      f"looked in {looked}; your own: --machines DIR or ${MACHINES_ENV})")


def load_machine(path: Path) -> MachineProfile:
    try:
        return MachineProfile.model_validate(read_yaml_mapping(path, "machine profile"))
    except ValidationError as exc:
        raise _errors(exc, path) from None


def find_spec(spec: str | Path) -> Path:
    """A sweep spec's file: ``spec`` if it is one, else the shipped spec of that name."""
    if Path(spec).is_file():
        return Path(spec)
    name = str(spec).removesuffix(".yaml")
    if PLAIN_NAME.fullmatch(name) and (sweeps_dir() / f"{name}.yaml").is_file():
        return sweeps_dir() / f"{name}.yaml"
    raise ConfigError(f"sweep spec not found: {spec} (not a file, nor a shipped spec: "
                      f"{', '.join(names(sweeps_dir())) or 'none'})")


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


def effective_settings(point: Point) -> str:
    """What a point really runs: its config without the lr rules' labels, the effective
    learning rates those rules give at its world size, and the world size."""
    from hpcue.stages.context import batch_plan

    cfg = point.run_config.model_dump(mode="json")
    lrs = []
    for section in ("train", "victim"):
        cfg[section].pop("lr_scaling")
        lrs.append(batch_plan(point.run_config, section, point.world_size).effective_lr)
    return json.dumps([cfg, lrs, point.world_size], sort_keys=True)


#: minutes before the wall time the job script is warned (its requeue signal)
WARNING_MINUTES = {"slurm": 2, "lsf": 5}


def _epoch_too_long(point: Point, n: int | None, rate: float | None,
                    scheduler: str) -> str | None:
    """Why ``point``'s stage-1 epoch cannot finish between two requeues (None: it can, or the
    size or the rate is unknown). Checkpoints are per epoch: a job must finish one."""
    if n is None or rate is None:
        return None
    epoch = n / rate / 60
    usable = point.walltime_minutes - WARNING_MINUTES[scheduler]
    if epoch <= usable:
        return None
    return (f"{point.name}: {n} images at {rate:g} images/s is {epoch:.1f} min an epoch, "
            f"more than the {usable} min of its {point.walltime_minutes} min wall time "
            f"before the requeue warning")


def known_train_size(cfg: RunConfig) -> int | None:
    """The training set's size where it is known before anything runs (prepared shards, the
    embedded digits, an official split); None otherwise (the run checks it on loading)."""
    d = cfg.data
    if d.shards is not None and (d.shards / META).is_file():
        return open_shards(d.shards).size("train")
    if d.dataset == "digits":
        return digits.train_size(d.test_fraction)
    return importer(d.dataset).train_size


def _distinct(points: list[Point]) -> tuple[list[Point], dict[str, str]]:
    """The points that run something no earlier point runs, and what each other one repeats."""
    kept: dict[str, Point] = {}
    same_as = {}
    for p in points:
        key = effective_settings(p)
        if key in kept:
            same_as[p.name] = kept[key].name
        else:
            kept[key] = p
    return list(kept.values()), same_as


def slug(text: str) -> str:
    """A name safe in paths: runs of anything but letters and digits become one '-'."""
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-")


def load_sweep(spec_file: str | Path, machines: Path | Sequence[Path] | None = None) -> Sweep:
    """Read, expand and validate a sweep (a path or a shipped spec's name): every point must be
    a valid, divisible run. ``machines``: the user's profile folders (None: ``$HPCUE_MACHINES``),
    searched before the shipped profiles."""
    path = find_spec(spec_file)
    try:
        spec = SweepSpec.model_validate(read_yaml_mapping(path, "sweep spec"))
    except ValidationError as exc:
        raise _errors(exc, path) from None
    notes = []
    machine_file = find_machine(spec.machine, user_machine_dirs(machines))
    machine = load_machine(machine_file)
    shipped = machines_dir() / machine_file.name
    if machine_file.resolve() != shipped.resolve() and shipped.is_file():
        notes.append(f"machine profile {spec.machine!r}: {machine_file}, in place of the "
                     f"shipped {shipped}")
    try:
        configs = {c: config_path(c, path.parent) for c in spec.configs}
        overrides = paths_from(path.parent, spec.overrides)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    if machine.account_required and not spec.account:
        raise ConfigError(f"{path}: machine {machine.name!r} needs an account (set account:)")
    per_node = spec.ranks_per_node or machine.ranks_per_node
    if machine.gpus_per_node and per_node > machine.gpus_per_node:
        raise ConfigError(f"{path}: {per_node} ranks per node but {machine.name} has "
                          f"{machine.gpus_per_node} GPUs a node")
    world = spec.nodes * per_node
    axes = [spec.configs, spec.global_batch_sizes, spec.seeds, spec.lr_scaling or [None],
            spec.num_clusters or [None], spec.epsilon or [None]]
    points, too_large, too_slow = [], [], []
    for config, batch, seed, rule, k, eps in product(*axes):
        # the machine's defaults first: the spec's overrides win
        sets = ([] if machine.max_micro_batch is None else
                [f"runtime.max_micro_batch={machine.max_micro_batch}"])
        sets += [] if machine.precision is None else [f"runtime.precision={machine.precision}"]
        sets += overrides + [f"train.global_batch_size={batch}", f"seed={seed}"]
        parts = [f"b{batch}", f"s{seed}"]
        if rule is not None:
            sets += [f"train.lr_scaling={rule}"]
            parts.append(f"lr{rule}")
        if k is not None:
            sets.append(f"cluster.num_clusters={k}")
            parts.append(f"k{k}")
        if eps is not None:
            sets.append(f"train.epsilon={eps}")
            parts.append(f"eps{eps:g}")
        try:
            cfg = load_config(configs[config], sets)
        except ConfigError as exc:
            raise ConfigError(f"{path}: point {config} {' '.join(parts)}: {exc}") from None
        for section in ("train", "victim"):
            gbs = getattr(cfg, section).global_batch_size
            if gbs % world:
                raise ConfigError(f"{path}: point {config} {' '.join(parts)}: {section} global "
                                  f"batch {gbs} is not divisible by the world size {world} "
                                  f"({spec.nodes} nodes x {per_node} ranks)")
        points.append(Point(f"{slug(cfg.data.dataset)}-{'-'.join(parts)}", configs[config], sets,
                            spec.nodes, per_node, cfg, spec.walltime_minutes(config)))
        n = known_train_size(cfg)
        slow = _epoch_too_long(points[-1], n, spec.rate(config), machine.scheduler)
        if slow:
            too_slow.append(slow)
        too_large += [f"{points[-1].name}: {section}.global_batch_size="
                      f"{getattr(cfg, section).global_batch_size} > {n} training images"
                      for section in ("train", "victim")
                      if n is not None and getattr(cfg, section).global_batch_size > n]
    if too_large:
        raise ConfigError(f"{path}: a global batch larger than the training set would run one "
                          f"padded step an epoch (world size {world}):\n  "
                          + "\n  ".join(too_large))
    names = [p.name for p in points]
    if len(set(names)) != len(names):
        raise ConfigError(f"{path}: two points share a name; give each config its own data set")
    if too_slow:
        raise ConfigError(f"{path}: a stage-1 epoch would not fit in the wall time, so the job "
                          f"would requeue forever without finishing an epoch:\n  "
                          + "\n  ".join(too_slow))
    points, same_as = _distinct(points)
    return Sweep(spec, machine, points, path, same_as, notes)
