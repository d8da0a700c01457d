"""The LightningModule that trains all K cluster generators in one pass over the data."""

from __future__ import annotations

import torch

from hpcue.attacks.base import AttackModule, perturb
from hpcue.attacks.uc import sharding
from hpcue.attacks.uc.objective import kl_to_targets, per_cluster_weights, target_clusters
from hpcue.distributed import collectives
from hpcue.models.generator import ClusterGenerators
from hpcue.models.surrogate import Surrogate
from hpcue.training.batches import UnitBatches
from hpcue.training.lr_schedule import scheduled
from hpcue.training.optimizers import make_optimizer


class UCModule(UnitBatches, AttackModule):
    """Generators are the only parameters; the surrogate is held outside the module tree.

    Keeping the surrogate out of ``children()`` means DDP neither wraps nor all-reduces it and
    checkpoints hold only what is trained. Cluster ids are looked up by each sample's global
    index, so any sampler (shuffled, sharded across ranks) keeps images and clusters aligned.

    ``shard``: each rank trains only the generators it owns (sharding.py), with manual
    optimization: Lightning's accumulation would rerun the generators every micro-batch, so
    the module accumulates ``accumulate`` micro-batches itself against one gather of deltas.
    """

    def __init__(self, generators: ClusterGenerators, surrogate: Surrogate,
                 centers: torch.Tensor, assignments: torch.Tensor, *, offset: int, lr: float,
                 weight_decay: float, min_lr: float, augment: str = "none",
                 warmup_epochs: float = 0.0, seed: int = 0, shard: bool = False,
                 accumulate: int = 1, generator_images: str = "own_cluster",
                 optimizer: str = "adamw") -> None:
        super().__init__()
        if generator_images not in ("own_cluster", "all"):
            raise ValueError(f"generator_images must be own_cluster or all, got "
                             f"{generator_images!r}")
        self.generator_images = generator_images
        self.optimizer_name = optimizer  # adamw, lamb or lars (training/optimizers.py)
        self.shard, self.accumulate = shard, accumulate  # fixed at build: never set later
        self.automatic_optimization = not shard
        # payload bytes of the collectives this rank joins: every optimizer step, and once an
        # epoch (shard's gather of every generator for the checkpoint); the stage records them
        self.traffic = {"step_bytes": 0, "steps": 0, "epoch_sync_bytes": 0}
        self._deltas: torch.Tensor | None = None  # the gathered deltas of this optimizer step
        self._own: torch.Tensor | None = None     # this rank's own deltas, with their graph
        self._owner_of: list[int] = []             # set at fit start (the world is known then)
        self._owned: list[int] = []
        self._grad_bytes = 0
        self.generators = generators
        object.__setattr__(self, "surrogate", surrogate)
        self.centers = centers.float()
        self.assignments = assignments.long()
        self.offset, self.lr, self.weight_decay, self.min_lr = offset, lr, weight_decay, min_lr
        self.augment, self.augment_seed, self.warmup_epochs = augment, seed, warmup_epochs
        self._present: torch.Tensor | None = None  # clusters seen since the last step

    @property
    def steps_itself(self) -> bool:
        return self.shard

    def _world(self) -> int:
        return self.trainer.world_size if self._trainer is not None else 1

    def _global_counts(self, clusters: torch.Tensor) -> torch.Tensor:
        """How many images of each cluster this step's batch holds, over every rank."""
        counts = torch.bincount(clusters, minlength=len(self.centers)).double()
        if self._world() > 1:
            counts = self.trainer.strategy.reduce(counts, reduce_op="sum")
            self._count(counts)
        return counts

    def _count(self, payload: torch.Tensor) -> None:
        """Add a collective's payload to this step's traffic (none in one process)."""
        if self._world() > 1:
            self.traffic["step_bytes"] += payload.numel() * payload.element_size()

    def on_fit_start(self) -> None:
        self.surrogate.to(self.device).eval()
        self.centers = self.centers.to(self.device)
        self.assignments = self.assignments.to(self.device)
        # fixed for the fit: who owns each generator (all this rank's under replicate), and
        # what DDP all-reduces every step under replicate
        world, rank = (self._world(), self.global_rank) if self.shard else (1, 0)
        self._owner_of = sharding.owners(self.generators.num_clusters, world)
        self._owned = [k for k, r in enumerate(self._owner_of) if r == rank]
        self._grad_bytes = sum(p.numel() * p.element_size() for p in self.generators.parameters())

    def _uc_loss(self, batch, batch_idx: int, deltas: torch.Tensor) -> torch.Tensor:
        """This micro-batch's loss: generator k's part is the mean KL over cluster k's images
        of the whole (every rank's) micro-batch; with ``generator_images="all"``, over every
        image, each pulled toward generator k's target (the UC reference's scheme)."""
        images, _labels, index = batch
        images = self.augmented(images, batch_idx)
        clusters = self.assignments[index]
        if self.generator_images == "all":  # every image once per generator: K x the batch
            k = len(self.centers)
            images = images.repeat(k, 1, 1, 1)
            clusters = torch.arange(k, device=images.device).repeat_interleave(len(index))
        features = self.surrogate(perturb(images, deltas, clusters))
        targets = target_clusters(clusters, self.offset, len(self.centers))
        kl = kl_to_targets(features, self.centers, targets)
        counts = self._global_counts(clusters)
        present = counts > 0
        self._present = present if self._present is None else self._present | present
        # replicate: DDP averages over ranks, so each rank's share is scaled back up by W;
        # shard: the gradients on the deltas are summed
        world = 1 if self.shard else self._world()
        loss = (kl * per_cluster_weights(clusters, counts, world).to(kl.dtype)).sum()
        self.log("uc_loss", kl.mean().detach(), prog_bar=True, on_step=True, on_epoch=True,
                 batch_size=len(images), sync_dist=False)
        return loss

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        if not self.shard or self._trainer is None:  # (a micro-batch trial: replicate's cost)
            self._count(self.generators.noise)  # DDP broadcasts the buffers every forward
            return self._uc_loss(batch, batch_idx, self.generators())
        if self._deltas is None:  # the first micro-batch of an optimizer step
            self._own = self.generators(self._owned)
            self._deltas = sharding.gather_deltas(self._own, self._owned,
                                                  self.generators.num_clusters)
            self._count(self._deltas)
        loss = self._uc_loss(batch, batch_idx, self._deltas)
        # Lightning's accumulation divides each micro-batch's loss by the same count
        self.manual_backward(loss / self.accumulate)
        last = batch_idx + 1 == self.trainer.num_training_batches
        if (batch_idx + 1) % self.accumulate == 0 or last:
            self._step_owned()
            # a fixed number of steps (train.steps) ends training within an epoch: that last
            # step syncs too, or the other ranks' generators would be an epoch old
            max_steps = self.trainer.max_steps
            if last or (max_steps != -1 and self.trainer.global_step >= max_steps):
                # the epoch checkpoint and the final deltas hold every generator
                self.traffic["epoch_sync_bytes"] = sharding.sync_owned_state(
                    self.generators.generators, self._owner_of, self.optimizers().optimizer)
        return loss.detach()

    def _step_owned(self) -> None:
        """Sum the deltas' gradients over ranks, backpropagate each owner's share through its
        own generators, and step."""
        assert self._deltas is not None and self._own is not None
        grad = self._deltas.grad
        if grad is None:
            grad = torch.zeros_like(self._deltas)
        grad = collectives.all_reduce_sum(grad)
        self._count(grad)
        self.traffic["steps"] += 1
        ids, opt = self._owned, self.optimizers()
        if ids:
            self._own.backward(grad[ids].to(self._own.dtype))
        if getattr(self.trainer.precision_plugin, "scaler", None) is not None:
            self._same_overflow_everywhere(grad, ids)
        opt.step()  # also where this rank owns none: Lightning counts steps by it
        opt.zero_grad(set_to_none=True)
        self.lr_schedulers().step()
        self._deltas = self._own = self._present = None

    def _same_overflow_everywhere(self, grad: torch.Tensor, ids: list[int]) -> None:
        """16-mixed: every rank's GradScaler sees an overflow when any rank had one, as under
        DDP, so all skip the step and halve their scales together (equal scales: the summed
        gradients carry one scale). A GradScaler checks only its own parameters' gradients,
        so an overflow is written into one of them; a rank that owns no generator gets a
        zero there to check (a copy the epoch's gather overwrites)."""
        own = [p.grad for k in ids for p in self.generators.generators[k].parameters()
               if p.grad is not None]
        finite = torch.isfinite(grad).all()
        if own:
            finite = finite & torch.stack([torch.isfinite(g).all() for g in own]).all()
        overflow = collectives.any_rank(not bool(finite))
        self._count(torch.zeros(1))
        first = next(self.generators.parameters())
        if overflow:
            first.grad = torch.full_like(first, float("inf"))
        elif not ids:
            first.grad = torch.zeros_like(first)

    def on_before_optimizer_step(self, optimizer) -> None:
        """A generator whose cluster had no image in this step is not stepped: no decay, no
        momentum drift (every rank knows the same global counts)."""
        if not self.shard:  # (a sharded step counts itself: some ranks step no optimizer)
            self.traffic["steps"] += 1
            if self._world() > 1:  # DDP all-reduced every generator gradient
                self.traffic["step_bytes"] += self._grad_bytes
        if self._present is not None:  # one copy to the host, not one per generator
            for present, generator in zip(self._present.tolist(), self.generators.generators,
                                          strict=True):
                if not present:
                    for p in generator.parameters():
                        p.grad = None
        self._present = None

    def speed_parts(self) -> dict[str, list[torch.nn.Module]]:
        """What ``runtime.channels_last`` and ``runtime.compile`` act on (training/speed.py):
        each generator, and the frozen surrogate (no child of this module)."""
        return {"generator": list(self.generators.generators), "surrogate": [self.surrogate]}

    def optimizer(self) -> torch.optim.Optimizer:
        """The generators' optimizer, before its schedule (benchmarks/gpu_throughput.py steps
        it bare)."""
        return make_optimizer(self.optimizer_name, self.generators, self.lr, self.weight_decay)

    def configure_optimizers(self):
        opt = self.optimizer()
        # sharded, the Trainer accumulates nothing: the module steps once per `accumulate`
        return scheduled(opt, self.trainer, self.warmup_epochs, self.min_lr,
                         accumulate=self.accumulate if self.shard else 1)
