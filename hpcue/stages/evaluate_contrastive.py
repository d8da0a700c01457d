"""Stage 3's contrastive victims (``victim.contrastive``): every method learns the clean, uc and
baseline training sets without labels, an online linear probe on its features learns the
labels, and each is tested on the clean test set (evaluation/contrastive.py). Their accuracies
join the supervised victims' as arms ``<method>:<set>``; the worst case over learners says
which learner the unlearnable set stops least."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from hpcue.evaluation.contrastive import ContrastiveEnsemble, ContrastiveLearner
from hpcue.evaluation.ensemble import by_learner
from hpcue.models.victims import build_victim
from hpcue.stages.context import StageContext


def train_contrastive(ctx: StageContext, arms: Sequence[Any], seeds: Sequence[int]
                      ) -> tuple[dict[str, list[float]], dict[str, list[list[float]]],
                                 dict[str, torch.Tensor] | None]:
    """Per contrastive arm: its learners' clean test accuracies (seed order), their curves, and
    their per-image test outcomes (None without a test count)."""
    v = ctx.cfg.victim
    classes = len(ctx.data.classes)
    size = ctx.cfg.data.image_size
    n = v.contrastive_seeds or v.seeds
    used = [a for a in arms if a.name in ("clean", "uc", *v.baselines)]
    triples = [(method, arm, i, seed) for method in v.contrastive for arm in used
               for i, seed in enumerate(seeds[:n])]
    names = [f"{method}:{arm.name}/seed{i}" for method, arm, i, _ in triples]
    members = []
    for method, _, _, seed in triples:
        torch.manual_seed(seed)  # learner i of every set starts from the same weights
        members.append(ContrastiveLearner(method, build_victim(v.arch, classes, size), classes))
    module = ContrastiveEnsemble(members, names, [s for *_, s in triples],
                                 [arm.transform for _, arm, _, _ in triples],
                                 lr=v.contrastive_lr, momentum=0.9, weight_decay=5e-4,
                                 image_size=size,
                                 num_test=ctx.data.size("test"))
    def batch_of(m: int) -> dict:
        return {name: ctx.trial_batch(m) for name in names}

    plan = ctx.probed_plan("victim", module, batch_of)
    train = {name: ctx.loader(arm.shards, "train", plan.micro_batch_size, train=True, seed=s)
             for name, (_, arm, _, s) in zip(names, triples, strict=True)}
    test = ctx.loader(ctx.data, "test", plan.per_rank_batch_size, train=False)
    trainer = ctx.trainer("contrastive", v.contrastive_epochs,
                          accumulate=plan.accumulate_grad_batches,
                          label=f"contrastive victims ({', '.join(v.contrastive)}: "
                                f"{len(used)} training sets x {n} seeds)")
    trainer.fit(module, train, val_dataloaders=test, ckpt_path=ctx.resume_path("contrastive"),
                weights_only=True)
    trainer.test(module, test, verbose=False)

    arm_names = list(dict.fromkeys(name.split("/")[0] for name in names))
    spans = {a: (k * n, (k + 1) * n) for k, a in enumerate(arm_names)}
    return by_learner(spans, module.test_accuracy, list(zip(*module.curves, strict=True)),
                      module.test_correct)
