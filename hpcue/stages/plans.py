"""A config's batch plans: what ``train`` and ``victim`` run per rank at a world size.

Apart from ``context.py`` (which builds Trainers, so imports torch and Lightning): a sweep
compares its points by the effective learning rates their plans give, and ``hpcue sweep
render`` loads neither library.
"""

from __future__ import annotations

from hpcue.config import RunConfig
from hpcue.training.batch_plan import BatchPlan, plan_batches

#: the config sections that train with a global batch: stage 1 and the victim
BATCHED = ("train", "victim")


def batch_plan(cfg: RunConfig, section: str, world_size: int) -> BatchPlan:
    """Per-rank batch, accumulation and effective lr of ``train`` or ``victim``."""
    s = getattr(cfg, section)
    limit = cfg.runtime.max_micro_batch
    return plan_batches(section, s.global_batch_size, world_size,
                        None if limit == "auto" else limit,
                        s.lr, s.lr_scaling, s.base_batch_size, s.warmup_epochs)
