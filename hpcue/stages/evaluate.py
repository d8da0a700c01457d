"""Stage 3: victims trained from scratch on every training set, several seeds each, all tested
on the clean test set.

The training sets ("arms"): clean; the unlearnable set as published; the unlearnable set after
each defense (grayscale, JPEG); and each baseline's set (random cluster-wise noise with UC's
clusters and eps; class-wise noise). Arms share seeds, so victim i of every arm starts from the
same weights and sees its data in the same order: only the data differs.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch

from hpcue.attacks.base import AttackInputs, perturb
from hpcue.attacks.registry import attack_class
from hpcue.data.shard_set import ShardSet, open_shards
from hpcue.data.tensors import to_unit
from hpcue.distributed import collectives
from hpcue.evaluation.defenses import DEFENSES
from hpcue.evaluation.ensemble import BatchTransform, VictimEnsemble, by_learner, identity
from hpcue.evaluation.metrics import (
    INTERVAL_METHOD,
    interval_warnings,
    sampling_variance,
    seed_summary,
)
from hpcue.evaluation.sharpness import SharpnessEachEpoch, threshold, unlearnable_distance
from hpcue.evaluation.training_defenses import TrainingDefense
from hpcue.evaluation.training_defenses import build as build_training_defense
from hpcue.figures.curves import draw_curves
from hpcue.io import atomic_write
from hpcue.models.victims import build_victim
from hpcue.stages.artifacts import read_clusters, read_perturbations
from hpcue.stages.context import StageContext
from hpcue.stages.evaluate_contrastive import train_contrastive
from hpcue.stages.plans import batch_plan
from hpcue.training.batch_plan import BatchPlan


@dataclass
class Arm:
    name: str
    shards: ShardSet
    transform: BatchTransform
    train_defense: TrainingDefense | None = None


def _defended(defense, images, labels, ids):
    return defense(images)


def changes_nothing(ctx: StageContext, defense: str) -> bool:
    """Grayscale on a gray data set with one-channel perturbations: the unlearnable images
    are gray already, so its victims would be the ``uc`` victims again, bit for bit."""
    return (defense == "grayscale" and ctx.data.grayscale
            and ctx.perturbation_channels == 1)


def defended_arm(ctx: StageContext, unlearnable: ShardSet, name: str) -> Arm:
    defense = DEFENSES[name]
    if defense.kind == "data":
        return Arm(f"uc+{name}", unlearnable, partial(_defended, defense.data_transform()))
    return Arm(f"uc+{name}", unlearnable, identity,
               build_training_defense(defense, len(ctx.data.classes)))


@dataclass
class Noised:
    """A baseline's perturbation, applied and rounded to 8 bits as a published set would be.

    Deltas and groups move to the batches' device once, not on every step.
    """

    deltas: torch.Tensor
    groups: torch.Tensor

    def __call__(self, images: torch.Tensor, labels, ids: torch.Tensor) -> torch.Tensor:
        if self.deltas.device != images.device:
            self.deltas, self.groups = self.deltas.to(images.device), self.groups.to(images.device)
        x = perturb(to_unit(images), self.deltas, self.groups[ids])
        return x.mul(255).round().to(torch.uint8)


@dataclass
class Mixed(Noised):
    """The thief's mix: the published (unlearnable) version of the images ``chosen`` marks (by
    global id), the clean original of the others."""

    chosen: torch.Tensor

    def __call__(self, images: torch.Tensor, labels, ids: torch.Tensor) -> torch.Tensor:
        out = super().__call__(images, labels, ids)
        self.chosen = self.chosen.to(images.device)
        keep = ~self.chosen[ids]
        out[keep] = images[keep]
        return out


def mixed_arms(ctx: StageContext) -> list[Arm]:
    """One arm per share p of ``victim.mixed``: the first round(p N) images of one permutation
    drawn from the run's seed are unlearnable, the rest clean. The unlearnable images are
    made as generate made them (``perturb``, 8 bits), from the saved deltas and groups."""
    if not ctx.cfg.victim.mixed:
        return []
    saved = read_perturbations(ctx.run)
    groups = saved.groups_or(read_clusters(ctx.run))
    n = ctx.data.size("train")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(ctx.cfg.seed))
    out = []
    for p in ctx.cfg.victim.mixed:
        chosen = torch.zeros(n, dtype=torch.bool)
        chosen[order[:round(p * n)]] = True
        out.append(Arm(f"uc@{p:g}", ctx.data, Mixed(saved.deltas, groups, chosen)))
    return out


def arms(ctx: StageContext) -> list[Arm]:
    cfg, clean = ctx.cfg, ctx.data
    unlearnable = open_shards(ctx.run.require(ctx.run.unlearnable, "generate"))
    out = [Arm("clean", clean, identity), Arm("uc", unlearnable, identity)]
    out += [defended_arm(ctx, unlearnable, d) for d in cfg.victim.defenses
            if not changes_nothing(ctx, d)]
    for name in cfg.victim.baselines:
        attack = attack_class(name).configured(cfg)
        if attack.uses_labels:  # class-wise: one group per class
            groups, count = torch.from_numpy(clean.labels("train")), len(clean.classes)
        else:  # random: UC's own clusters and eps, nothing learned
            clusters = read_clusters(ctx.run)
            groups, count = clusters.assignments, clusters.num_clusters
        deltas = attack.make(AttackInputs(groups=groups, num_groups=count,
                                          image_size=cfg.data.image_size,
                                          epsilon=cfg.train.epsilon, seed=cfg.seed,
                                          channels=ctx.perturbation_channels)).deltas
        out.append(Arm(name, clean, Noised(deltas, groups)))
    return out + mixed_arms(ctx)


def victim_seeds(seed: int, n: int) -> list[int]:
    """n victim seeds derived from the run's seed (independent of it for n > 1)."""
    return [int(s) for s in np.random.SeedSequence([seed, 1]).generate_state(n) % (2 ** 31)]


def write_curves(path: Path, curves: dict[str, list[list[float]]], epochs: int) -> None:
    """victim_curves.png (drawn by figures/curves.py): every arm's victims over the epochs."""
    png = draw_curves(curves, epochs)
    atomic_write(path, lambda tmp: tmp.write_bytes(png))


def summaries(per_arm: dict[str, list[float]],
              rows: dict[str, torch.Tensor] | None) -> dict[str, dict]:
    """Every arm's accuracy summary; ``rows`` (each arm's seeds x test images outcomes) adds
    the test set's sampling error to each interval."""
    if rows is None:
        return {arm: seed_summary(values) for arm, values in per_arm.items()}
    return {arm: seed_summary(values, sampling_variance(rows[arm]), rows[arm].shape[1])
            for arm, values in per_arm.items()}


def paired(per_arm: dict[str, list[float]], rows: dict[str, torch.Tensor] | None,
           better: str, worse: str) -> dict:
    """How far ``worse`` is below ``better``, paired by seed (and by test image)."""
    diffs = [b - w for b, w in zip(per_arm[better], per_arm[worse], strict=True)]
    if rows is None:
        return seed_summary(diffs, bounds=(-1.0, 1.0))
    outcome = rows[better].float() - rows[worse].float()
    return seed_summary(diffs, sampling_variance(outcome), outcome.shape[1], bounds=(-1.0, 1.0))


def contrastive_record(ctx: StageContext, sets: list[Arm], seeds: list[int],
                       victims: dict[str, dict], curves: dict[str, list]) -> dict:
    """The contrastive victims' arms (added to ``victims`` and ``curves``) and their paired
    differences."""
    v = ctx.cfg.victim
    per_arm, more_curves, rows = train_contrastive(ctx, sets, seeds)
    victims.update(summaries(per_arm, rows))
    curves.update(more_curves)
    out: dict = {
        "contrastive": {"methods": list(v.contrastive), "epochs": v.contrastive_epochs,
                        "seeds": len(per_arm[f"{v.contrastive[0]}:uc"]),
                        "lr": v.contrastive_lr,
                        "probe": "online linear (trained beside the encoder on detached "
                                 "features)", "arms": sorted(per_arm)},
    }
    for m in v.contrastive:
        out["contrastive"][f"{m}_uc_below_clean"] = paired(per_arm, rows, f"{m}:clean",
                                                           f"{m}:uc")
        if "random" in v.baselines:
            out["contrastive"][f"{m}_uc_advantage_over_random"] = paired(
                per_arm, rows, f"{m}:random", f"{m}:uc")
    return out


def sharpness_callback(ctx: StageContext, learners: list, spans: dict[str, tuple[int, int]],
                       micro_batch: int, seed: int,
                       whole: bool = False) -> SharpnessEachEpoch | None:
    """victim.ud: SAL of the first victim of each of victim.arch's sets after every epoch
    (those in ``spans``: this rank's, under victim.spread, on the whole set)."""
    v = ctx.cfg.victim
    if not v.ud:
        return None
    own = [(label, arm) for label, arm, arch, _ in learners
           if ":" not in label and label in spans]
    return SharpnessEachEpoch(
        {label: spans[label][0] for label, _ in own},
        {label: ctx.loader(arm.shards, "train", micro_batch, train=True, seed=seed,
                           whole=whole) for label, arm in own},
        iterations=v.ud_iterations, radius=v.ud_radius, lr=v.ud_lr, across_ranks=not whole)


def ud_record(v, sal: dict[str, list[list[float]]]) -> dict:
    """Each set's Unlearnable Distance to the clean set, from its first victim's SAL."""
    clean = np.array(sal["clean"])
    cut = threshold(clean)
    return {"settings": {"iterations": v.ud_iterations, "radius": v.ud_radius,
                         "lr": v.ud_lr, "victim": "each set's first seed"},
            "threshold": cut,
            "arms": {arm: {**unlearnable_distance(clean, np.array(values), cut),
                           "sal": [[round(s, 5) for s in epoch] for epoch in values]}
                     for arm, values in sal.items()}}


@dataclass
class Trained:
    """What the victims' training gives, in member order, whichever way it was spread."""

    test_accuracy: list[float]
    curves: list[list[float]]             # per member: its accuracy after each epoch
    test_correct: torch.Tensor | None     # members x test images
    sal: dict[str, list[list[float]]]
    loader: object                        # one of the training loaders (for the batch record)
    plan: BatchPlan | None = None         # spread: the plan each rank trained under
    per_rank: list[int] | None = None     # spread: how many members each rank trained


def _ensemble(ctx: StageContext, pairs: list, names: list[str], lr: float) -> VictimEnsemble:
    v = ctx.cfg.victim
    members = []
    for _, arch, _, seed in pairs:
        torch.manual_seed(seed)  # victim i of every arm starts from the same weights
        members.append(build_victim(arch, len(ctx.data.classes), ctx.cfg.data.image_size))
    return VictimEnsemble(members, names, [s for *_, s in pairs],
                          [arm.transform for arm, *_ in pairs], lr=lr,
                          momentum=v.momentum, weight_decay=v.weight_decay,
                          augment=ctx.augment, warmup_epochs=v.warmup_epochs,
                          train_defenses=[arm.train_defense for arm, *_ in pairs],
                          num_test=ctx.data.size("test"))


def train_together(ctx: StageContext, pairs: list, names: list[str], learners: list,
                   spans: dict, seed: int, label: str) -> Trained:
    """Every victim on every rank, each rank its share of every batch (data-parallel)."""
    v, plan = ctx.cfg.victim, ctx.plans["victim"]
    module = _ensemble(ctx, pairs, names, plan.effective_lr)
    plan = ctx.probed_plan("victim", module,
                           lambda m: {name: ctx.trial_batch(m) for name in names})
    train = {name: ctx.loader(arm.shards, "train", plan.micro_batch_size, train=True, seed=s)
             for name, (arm, *_, s) in zip(names, pairs, strict=True)}
    test = ctx.loader(ctx.data, "test", plan.per_rank_batch_size, train=False)
    sal = sharpness_callback(ctx, learners, spans, plan.micro_batch_size, seed)
    trainer = ctx.trainer("victims", v.epochs, [sal] if sal else None,
                          accumulate=plan.accumulate_grad_batches, label=label)
    trainer.fit(module, train, val_dataloaders=test, ckpt_path=ctx.resume_path("victims"),
                weights_only=True)
    trainer.test(module, test, verbose=False)
    return Trained(module.test_accuracy, [list(c) for c in zip(*module.curves, strict=True)],
                   module.test_correct, module.sal, next(iter(train.values())))


def train_spread(ctx: StageContext, pairs: list, names: list[str], learners: list,
                 spans: dict, seed: int, label: str) -> Trained:
    """victim.spread: rank r trains victims r, r + W, ... on the whole training set, alone
    (nothing is exchanged while they train), then every rank's results are gathered."""
    v = ctx.cfg.victim
    rank, world = collectives.rank(), collectives.world_size()
    plan = batch_plan(ctx.cfg, "victim", 1)  # the global batch, as one process takes it
    mine = list(range(rank, len(pairs), world))
    module = _ensemble(ctx, [pairs[j] for j in mine], [names[j] for j in mine],
                       plan.effective_lr)
    train = {names[j]: ctx.loader(pairs[j][0].shards, "train", plan.micro_batch_size,
                                  train=True, seed=pairs[j][3], whole=True) for j in mine}
    test = ctx.loader(ctx.data, "test", plan.micro_batch_size, train=False, whole=True)
    local = {label_: mine.index(start) for label_, (start, _) in spans.items() if start in mine}
    sal = sharpness_callback(ctx, learners, {k: (i, i + 1) for k, i in local.items()},
                             plan.micro_batch_size, seed, whole=True)
    name = f"victims-rank{rank}of{world}"
    trainer = ctx.trainer(name, v.epochs, [sal] if sal else None, this_rank_only=True,
                          accumulate=plan.accumulate_grad_batches,
                          label=f"{label}, rank {rank}: {len(mine)} of them")
    if mine:
        trainer.fit(module, train, val_dataloaders=test, ckpt_path=ctx.resume_path(name),
                    weights_only=True)
        trainer.test(module, test, verbose=False)
    part = {"ids": mine, "acc": module.test_accuracy if mine else [],
            "curves": [list(c) for c in zip(*module.curves, strict=True)] if mine else [],
            "correct": module.test_correct, "sal": module.sal}
    parts = collectives.gather_objects(part)
    n = len(pairs)
    acc, curves = [0.0] * n, [[] for _ in range(n)]
    correct = None
    sal: dict[str, list[list[float]]] = {}
    for p in parts:
        for k, j in enumerate(p["ids"]):
            acc[j], curves[j] = p["acc"][k], p["curves"][k]
        if p["correct"] is not None:
            if correct is None:
                correct = torch.zeros((n, p["correct"].shape[1]), dtype=torch.bool)
            correct[p["ids"]] = p["correct"]
        sal.update(p["sal"])
    loader = next(iter(train.values()), None) or ctx.loader(
        pairs[0][0].shards, "train", plan.micro_batch_size, train=True, seed=pairs[0][3],
        whole=True)  # a rank with no victims reads the same plan
    return Trained(acc, curves, correct, sal, loader, plan,
                   per_rank=[len(p["ids"]) for p in parts])


def run(ctx: StageContext) -> dict:
    cfg, v = ctx.cfg, ctx.cfg.victim
    seeds = victim_seeds(cfg.seed, v.seeds)
    sets = arms(ctx)
    # (result name, training set, architecture, victims): every set with victim.arch, then
    # the clean and uc sets with each of victim.other_archs
    learners = [(arm.name, arm, v.arch, len(seeds)) for arm in sets]
    learners += [(f"{arch}:{arm.name}", arm, arch, v.other_archs_seeds or len(seeds))
                 for arch in v.other_archs for arm in sets[:2]]
    # member order: learner by learner, seed i within each (results are read back so)
    pairs = [(arm, arch, i, seeds[i]) for _, arm, arch, k in learners for i in range(k)]
    names = [f"{label}/seed{i}" for label, _, _, k in learners for i in range(k)]
    spans = {}  # each learner's members: [start, end)
    for label, *_, k in learners:
        start = max((end for _, end in spans.values()), default=0)
        spans[label] = (start, start + k)
    label = f"victims ({len(learners)} training sets x {len(seeds)} seeds)"
    spread = v.spread and ctx.topology.world_size > 1
    fitted = (train_spread if spread else train_together)(ctx, pairs, names, learners, spans,
                                                           seeds[0], label)

    per_arm, curves, rows = by_learner(spans, fitted.test_accuracy, fitted.curves,
                                       fitted.test_correct)
    victims = summaries(per_arm, rows)
    if collectives.is_main():  # the arms that were trained (a copy would hide uc's line)
        write_curves(ctx.run.victim_curves, curves, v.epochs)
    same_as_uc = [d for d in v.defenses if changes_nothing(ctx, d)]
    for d in same_as_uc:  # not trained: the same victims as uc
        victims[f"uc+{d}"] = victims["uc"] | {"same_as": "uc"}
        curves[f"uc+{d}"] = curves["uc"]
    uc_arms = ["uc", *(f"uc+{d}" for d in v.defenses)]
    worst = max(uc_arms, key=lambda a: victims[a]["mean"])
    trained = "uc" if worst.removeprefix("uc+") in same_as_uc else worst  # whose victims it has
    record = {
        "victim_seeds": seeds,
        "augment": ctx.augment,
        "victims": victims,
        "interval_method": INTERVAL_METHOD,
        # a small test set: its intervals are rough (results.json, the run's last lines)
        "warnings": interval_warnings(ctx.data.size("test")),
        "defenses": {d: DEFENSES[d].as_record() for d in v.defenses},
        "defenses_not_trained": {f"uc+{d}": "the unlearnable images are gray: grayscale "
                                 "leaves them as they are (victims of uc)" for d in same_as_uc},
        "clean_test_acc": victims["clean"]["mean"],
        "unlearnable_test_acc": victims["uc"]["mean"],
        "worst_case_unlearnable_test_acc": victims[worst]["mean"],
        "worst_case_defense": worst,
        "baselines": {b: victims[b] for b in v.baselines},
        "victim_curves": curves,
        "batch_plan": ctx.batch_record("victim", fitted.loader, fitted.plan),
        "uc_below_clean": paired(per_arm, rows, "clean", "uc"),
        "worst_case_below_clean": paired(per_arm, rows, "clean", trained),
    }
    if v.mixed:  # how fast the protection fades as the thief's share of clean images grows
        record["mixed"] = [{"share": p, "arm": f"uc@{p:g}",
                            "unlearnable_images": round(p * ctx.data.size("train")),
                            "test_acc": victims[f"uc@{p:g}"]["mean"],
                            "below_clean": paired(per_arm, rows, "clean", f"uc@{p:g}")}
                           for p in v.mixed]
    if v.ud:
        record["ud"] = ud_record(v, fitted.sal)
    record["victim_parallel"] = ({"mode": "spread", "members_per_rank": fitted.per_rank}
                                 if spread else {"mode": "data"})
    if v.other_archs:
        record["other_archs"] = {arch: {"uc_below_clean": paired(per_arm, rows, f"{arch}:clean",
                                                                 f"{arch}:uc")}
                                 for arch in v.other_archs}
    if v.contrastive:
        record.update(contrastive_record(ctx, sets, seeds, victims, curves))
    others = ["uc", *(f"{a}:uc" for a in v.other_archs), *(f"{m}:uc" for m in v.contrastive)]
    if len(others) > 1:
        worst_learner = max(others, key=lambda a: victims[a]["mean"])
        record["worst_case_over_learners"] = {"learner": worst_learner,
                                              "test_acc": victims[worst_learner]["mean"]}
    if "random" in v.baselines:  # paired by seed: how far UC is below its trivial twin
        record["uc_advantage_over_random"] = paired(per_arm, rows, "random", "uc")
        record["worst_case_advantage_over_random"] = paired(per_arm, rows, "random", trained)
    return record
