"""UC as an ``Attack``: K generators trained in one pass, each from its own cluster's images
(or, ``generator_images="all"``, each from every image, as the UC reference trains them)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from hpcue.attacks.base import Attack, AttackInputs, AttackResult
from hpcue.attacks.uc.module import UCModule
from hpcue.models.generator import ClusterGenerators


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
    shard: bool = False  # each rank trains the generators it owns (sharding.py)
    # own_cluster: generator k learns from cluster k's images (one pass trains all K); all: from
    # every image, each pulled toward k's target (the UC reference's scheme, K x the work)
    generator_images: str = "own_cluster"

    def make(self, inputs: AttackInputs) -> AttackResult:
        if inputs.centers is None or inputs.surrogate is None or inputs.fit is None:
            raise TypeError("UC needs cluster centers, a surrogate and a fit function")
        generators = ClusterGenerators(inputs.num_groups, inputs.image_size, inputs.epsilon,
                                       self.width, self.blocks, self.bound, seed=inputs.seed,
                                       channels=inputs.channels)
        module = UCModule(generators, inputs.surrogate, inputs.centers, inputs.groups,
                          offset=self.target_offset, lr=self.lr, weight_decay=self.weight_decay,
                          min_lr=self.min_lr, augment=self.augment,
                          warmup_epochs=self.warmup_epochs, seed=inputs.seed, shard=self.shard,
                          generator_images=self.generator_images)
        inputs.fit(module, inputs.loader)
        module.generators.eval()
        with torch.no_grad():
            deltas = module.generators().cpu()
        return AttackResult(deltas, {"generators": module.generators.state_dict()},
                            {"traffic": dict(module.traffic)})
