"""A spec expanded into points: one full, validated run config per crossing of its axes.

Every point is validated as a full run config before anything is rendered or submitted, with
the machine profile's micro batch and precision; its batches are checked against the training
set's size where it is known, its stage-1 epoch against its wall time where the rate is given;
a point that runs exactly what an earlier one runs is dropped.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import product
from pathlib import Path

from hpcue.config import ConfigError, RunConfig, load_config
from hpcue.data.importers import digits
from hpcue.data.meta_io import META
from hpcue.data.registry import importer
from hpcue.data.shard_set import open_shards
from hpcue.errors import InputError
from hpcue.stages.plans import batch_plan
from hpcue.stages.slices import flat_config
from hpcue.sweep.machines import (
    WARNING_MINUTES,
    MachineProfile,
    find_machine,
    load_machine,
    scheduler_word,
    user_machine_dirs,
)
from hpcue.sweep.shipped import machines_dir
from hpcue.sweep.spec import (
    SweepSpec,
    config_path,
    find_spec,
    load_spec,
    paths_from,
    placeholder_account,
)


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
    #: a config's relative input path not found from the current directory (``relative_inputs``)
    unfound: list[str] = field(default_factory=list)

    def digest(self) -> str:
        """Identifies what the sweep directory was written for."""
        blob = json.dumps({"spec": self.spec.model_dump(mode="json"),
                           "machine": self.machine.model_dump(mode="json")}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def effective_settings(point: Point) -> str:
    """What a point really runs: its config without the lr rules' labels, the effective
    learning rates those rules give at its world size, and the world size."""
    cfg = point.run_config.model_dump(mode="json")
    lrs = []
    for section in ("train", "victim"):
        cfg[section].pop("lr_scaling")
        lrs.append(batch_plan(point.run_config, section, point.world_size).effective_lr)
    return json.dumps([cfg, lrs, point.world_size], sort_keys=True)


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


def with_account(spec: SweepSpec, account: str | None) -> SweepSpec:
    """``spec`` charging ``account`` (``--account``) in place of its own ``account:``; a value a
    directive cannot take, or a placeholder, is refused as the command line's."""
    if account is None:
        return spec
    try:
        account = scheduler_word(account)
    except ValueError as exc:
        raise InputError(f"--account: {exc}") from None
    if placeholder_account(account):
        raise InputError(f"--account: {account!r} is a placeholder, not a project: give the "
                         f"account your jobs are charged to")
    return spec.model_copy(update={"account": account})


def crossings(spec: SweepSpec) -> list[tuple]:
    """Every (config, variant, batch, seed, lr rule, K, eps) the spec crosses: a variant's own
    batch sizes in place of the spec's where it names them; None where an axis is not set."""
    out = []
    for config in spec.configs:
        for name, variant in (spec.variants or {None: None}).items():
            batches = ((variant.global_batch_sizes if variant is not None else None)
                       or spec.global_batch_sizes)
            out += [(config, name, *rest) for rest in product(
                batches, spec.seeds, spec.lr_scaling or [None], spec.num_clusters or [None],
                spec.epsilon or [None])]
    return out


def load_sweep(spec_file: str | Path, machines: Path | Sequence[Path] | None = None,
               account: str | None = None) -> Sweep:
    """Read, expand and validate a sweep (a path or a shipped spec's name): every point must be
    a valid, divisible run. ``machines``: the user's profile folders (None: ``$HPCUE_MACHINES``),
    searched before the shipped profiles; ``account``: the command line's, replacing the
    spec's."""
    path = find_spec(spec_file)
    spec = with_account(load_spec(path), account)
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
        variant_sets = {name: paths_from(path.parent, v.overrides)
                        for name, v in (spec.variants or {}).items()}
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    if machine.account_required and not spec.account:
        raise ConfigError(f"{path}: machine {machine.name!r} needs an account (set account: in "
                          f"the spec, or pass --account)")
    per_node = spec.ranks_per_node or machine.ranks_per_node
    if machine.gpus_per_node and per_node > machine.gpus_per_node:
        raise ConfigError(f"{path}: {per_node} ranks per node but {machine.name} has "
                          f"{machine.gpus_per_node} GPUs a node")
    world = spec.nodes * per_node
    points, too_large, too_slow = [], [], []
    for config, variant, batch, seed, rule, k, eps in crossings(spec):
        # the machine's defaults first: the spec's overrides win, and a variant's win over both
        sets = ([] if machine.max_micro_batch is None else
                [f"runtime.max_micro_batch={machine.max_micro_batch}"])
        sets += [] if machine.precision is None else [f"runtime.precision={machine.precision}"]
        sets += overrides
        parts = [f"b{batch}", f"s{seed}"]
        if variant is not None:
            sets += variant_sets[variant]
            parts.append(variant)
        sets += [f"train.global_batch_size={batch}", f"seed={seed}"]
        if spec.steps is not None:
            sets.append(f"train.steps={spec.steps}")
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
    return Sweep(spec, machine, points, path, same_as, notes, relative_inputs(points))


#: the run-config keys a job reads a file or folder from (cluster.shared is written, not read)
INPUT_KEYS = ("data.shards", "data.root", "surrogate.weights")


def relative_inputs(points: list[Point]) -> list[str]:
    """A config's relative input path is read by each job from the directory it is submitted
    from (the scripts cd there), not from the config's folder: one note for each that is not
    found from the current directory, so a typo or a missing prepare shows before submitting
    (the spec's own overrides are taken from the spec's folder, made absolute, never here)."""
    out: dict[str, str] = {}
    for point in points:
        flat = flat_config(point.run_config)
        for key in INPUT_KEYS:
            value = flat.get(key)
            if (isinstance(value, str) and not Path(value).is_absolute()
                    and not value.startswith("~") and not Path(value).exists()):
                out.setdefault(f"{point.config}:{key}", (
                    f"{point.config.name}: {key}={value} is relative: each job reads it from "
                    f"the directory it is submitted from, and it is not in {Path.cwd()}; "
                    f"submit from where it is, or give an absolute path"))
    return list(out.values())
