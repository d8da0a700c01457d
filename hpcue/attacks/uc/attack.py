"""UC as an ``Attack``: K generators trained in one pass, each from its own cluster's images
(or, ``generator_images="all"``, each from every image, as the UC reference trains them)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from hpcue.attacks.base import Attack, AttackInputs, AttackResult
from hpcue.attacks.uc.module import UCModule
from hpcue.config import RunConfig
from hpcue.models.generator import ClusterGenerators


def sharded(mode: str, world_size: int) -> bool:
    """``train.generator_parallel``: auto shards the generators whenever there are ranks to
    share them."""
    return mode == "shard" or (mode == "auto" and world_size > 1)


def communicated(traffic: dict) -> dict:
    """The collective payload from this rank's view: per optimizer step (mean over the steps
    it ran) and once an epoch."""
    steps = max(1, traffic["steps"])
    return {"bytes_per_step": round(traffic["step_bytes"] / steps),
            "sync_bytes_per_epoch": traffic["epoch_sync_bytes"]}


@dataclass
class UnlearnableClusters(Attack):
    """The generator shape and the optimisation; clusters, eps and data come as inputs."""

    name: ClassVar[str] = "uc"
    uses_labels: ClassVar[bool] = False

    width: int
    blocks: int
    bound: str
    target_offset: int
    lr: float
    weight_decay: float
    min_lr: float
    augment: str = "none"
    warmup_epochs: float = 0.0
    # replicate | shard | auto (shard whenever there are ranks to share them; sharding.py)
    generator_parallel: str = "replicate"
    # own_cluster: generator k learns from cluster k's images (one pass trains all K); all: from
    # every image, each pulled toward k's target (the UC reference's scheme, K x the work)
    generator_images: str = "own_cluster"
    # adamw, lamb or lars (training/optimizers.py)
    optimizer: str = "adamw"

    @classmethod
    def configured(cls, cfg: RunConfig, *, lr: float | None = None,
                   augment: str = "none") -> UnlearnableClusters:
        if lr is None:
            raise TypeError("UC trains: it needs the batch plan's learning rate")
        t = cfg.train
        return cls(width=t.generator_width, blocks=t.generator_blocks, bound=t.bound,
                   target_offset=t.target_offset, lr=lr, weight_decay=t.weight_decay,
                   min_lr=t.min_lr, augment=augment, warmup_epochs=t.warmup_epochs,
                   generator_parallel=t.generator_parallel,
                   generator_images=t.generator_images, optimizer=t.optimizer)

    def make(self, inputs: AttackInputs) -> AttackResult:
        if inputs.centers is None or inputs.surrogate is None or inputs.fit is None \
                or inputs.loader is None:
            raise TypeError("UC needs cluster centers, a surrogate, batches and a fit function")
        shard = sharded(self.generator_parallel, inputs.world_size)
        centers, surrogate = inputs.centers, inputs.surrogate
        rng = torch.get_rng_state()  # the generators' weights are drawn from the global RNG

        def build(accumulate: int) -> UCModule:
            torch.set_rng_state(rng)  # every build starts from the same weights
            generators = ClusterGenerators(inputs.num_groups, inputs.image_size,
                                           inputs.epsilon, self.width, self.blocks, self.bound,
                                           seed=inputs.seed, channels=inputs.channels)
            return UCModule(generators, surrogate, centers, inputs.groups,
                            offset=self.target_offset, lr=self.lr,
                            weight_decay=self.weight_decay, min_lr=self.min_lr,
                            augment=self.augment, warmup_epochs=self.warmup_epochs,
                            seed=inputs.seed, shard=shard, accumulate=accumulate,
                            generator_images=self.generator_images,
                            optimizer=self.optimizer)

        module = inputs.fit(build, inputs.loader)
        assert isinstance(module, UCModule)
        module.generators.eval()
        with torch.no_grad():
            deltas = module.generators().cpu()
        record = {"generator_parallel": "shard" if shard else "replicate",
                  "generator_images": self.generator_images, **communicated(module.traffic)}
        return AttackResult(deltas, {"generators": module.generators.state_dict()}, record)
