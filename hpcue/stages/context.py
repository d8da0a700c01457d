"""What every stage of one run reads, built once: config, run directory, topology, batch plans,
and the prepared data (loaded on first use, so the stage that creates the run prepares it)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from hpcue import console
from hpcue.config import RunConfig
from hpcue.data.loader import ShardDataset, make_loader, make_owned_loader
from hpcue.data.registry import importer
from hpcue.data.shard_set import ShardSet
from hpcue.distributed import collectives
from hpcue.distributed.topology import Topology, current
from hpcue.models.surrogate import Surrogate, build_surrogate
from hpcue.stages.inputs import load_data
from hpcue.stages.plans import BATCHED, batch_plan
from hpcue.stages.rundir import RunDir
from hpcue.training import speed
from hpcue.training.batch_plan import BatchPlan, epoch_shape
from hpcue.training.micro_batch import probe_micro_batch, random_batch, step_trial
from hpcue.training.precision import resolve_deterministic
from hpcue.training.trainer import TrainerSettings, make_trainer, resume_path


@dataclass
class StageContext:
    cfg: RunConfig
    run: RunDir
    topology: Topology
    plans: dict[str, BatchPlan]
    _data: ShardSet | None = field(default=None, repr=False)

    @classmethod
    def build(cls, cfg: RunConfig, run: RunDir) -> StageContext:
        """Everything that needs only the config and the world size; bad batch sizes fail here,
        before anything is written."""
        world = collectives.world_size()
        return cls(cfg, run, current(), {s: batch_plan(cfg, s, world) for s in BATCHED})

    @property
    def data(self) -> ShardSet:
        """The clean shards: prepared by rank 0 on first use if needed, checked, opened."""
        if self._data is None:
            self._data = load_data(self.cfg, self.run)
        return self._data

    @property
    def augment(self) -> str:
        """The training augmentation of every stage: ``data.augment``, or the data set's own."""
        a = self.cfg.data.augment
        return importer(self.cfg.data.dataset).augment if a == "auto" else a

    @cached_property
    def perturbation_channels(self) -> int:
        """1 (one change for R, G and B) on a gray data set under ``auto``, else as configured."""
        c = self.cfg.train.perturbation_channels
        if c != "auto":
            return c
        if "grayscale" not in self.data.meta and collectives.is_main():
            print(f"[hpcue] {self.data.root}/meta.json does not say whether its images are gray "
                  f"(prepared by an older hpcue): 3-channel perturbations. Prepare it again, or "
                  f"set train.perturbation_channels=1 for a gray data set", flush=True)
        return 1 if self.data.grayscale else 3

    def loader(self, shards: ShardSet, split: str, batch_size: int, *, train: bool,
               seed: int | None = None, whole: bool = False):
        """This rank's part (``whole``: all of it, as one process reads it): training order
        (shuffled, padded) or evaluation (each sample once); the order is drawn from ``seed``
        (default: the run's)."""
        return make_loader(ShardDataset(shards, split, cache=self.cfg.data.cache), batch_size,
                           shuffle=train, seed=self.cfg.seed if seed is None else seed,
                           num_workers=self.cfg.data.num_workers,
                           pin_memory=speed.current().pin_memory,
                           rank=0 if whole else collectives.rank(),
                           world_size=1 if whole else collectives.world_size())

    def owned_loader(self, shards: ShardSet, split: str, global_batch: int):
        """This rank's own images of each global batch (data/loader.py ``OwnedBatches``): for
        an attack that keeps one delta per image, on the rank that owns the image."""
        return make_owned_loader(ShardDataset(shards, split, cache=self.cfg.data.cache),
                                 global_batch, seed=self.cfg.seed,
                                 num_workers=self.cfg.data.num_workers, rank=collectives.rank(),
                                 world_size=collectives.world_size(),
                                 pin_memory=speed.current().pin_memory)

    def inputs(self, stage: str) -> dict[str, Path]:
        """The files ``stage`` reads, by label (their digests go into its record)."""
        return {"data": self.data.root, **self.run.stage_inputs(stage)}

    def probed_plan(self, section: str, module: L.LightningModule,
                    batch_of: Callable[[int], Any]) -> BatchPlan:
        """``section``'s plan; under ``runtime.max_micro_batch: auto`` on GPUs, at the largest
        micro batch a trial step of ``module`` fits on every rank (training/micro_batch.py).
        On CPUs auto sets no limit: host memory is not the device's."""
        plan = self.plans[section]
        if self.cfg.runtime.max_micro_batch == "auto" and self.topology.device.startswith("cuda"):
            trial = step_trial(module, batch_of, torch.device(self.topology.device))
            plan = self.plans[section] = probe_micro_batch(plan, trial, collectives.any_rank,
                                                           collectives.raise_if_any)
        return plan

    def trial_batch(self, size: int):
        """A random batch shaped like this run's training batches (a micro-batch trial)."""
        return random_batch(size, self.cfg.data.image_size, len(self.data.classes),
                            self.data.size("train"))

    def batch_record(self, section: str, loader, plan: BatchPlan | None = None) -> dict:
        """``section``'s batch plan (or ``plan``) and what an epoch of ``loader`` really runs."""
        plan = self.plans[section] if plan is None else plan
        # an owned loader (OwnedBatches) reads each of its images once; its sampler is not
        # the rank's
        samples = getattr(loader.batch_sampler, "rank_images", None) or len(loader.sampler)
        return plan.as_dict() | epoch_shape(plan, self.data.size("train"), samples,
                                            len(loader))

    def surrogate(self) -> Surrogate:
        """The configured surrogate; the debug small_cnn uses the one the cluster stage trained."""
        s = self.cfg.surrogate
        weights = s.weights
        if s.arch == "small_cnn" and weights is None:
            weights = self.run.require(self.run.surrogate, "cluster")
        return build_surrogate(s.arch, weights)

    def trainer(self, name: str, epochs: int, callbacks: list[Callback] | None = None,
                accumulate: int = 1, this_rank_only: bool = False,
                label: str | None = None, wrap: bool = True,
                max_steps: int | None = None) -> L.Trainer:
        """A Trainer whose checkpoints and logs for ``name`` live in this run directory; its
        progress bar says ``label``."""
        r = self.cfg.runtime
        deterministic = resolve_deterministic(r.deterministic,
                                              self.topology.device.startswith("cuda"))
        settings = TrainerSettings(r.precision, deterministic, r.timeout_s)
        return make_trainer(settings, self.run.stage_checkpoints(name), self.run.logs, name,
                            epochs, callbacks, accumulate, this_rank_only, label, wrap,
                            max_steps)

    def resume_path(self, name: str) -> str | None:
        """``name``'s last epoch checkpoint, if an earlier attempt stopped mid-training (said
        on the terminal: Lightning's own "Restoring states" goes to the log file)."""
        path = resume_path(self.run.stage_checkpoints(name))
        if path is not None and collectives.is_main():
            console.say(f"{name}: resuming from the epoch checkpoint {path}")
        return path
