"""results.json: the run's headline numbers, from the stage records, with their provenance.

Units are named where a figure has two customary ones: ``epsilon`` is a fraction of the pixel
range (as in the config), ``epsilon_255`` and every ``*_255`` key are 8-bit pixel levels.
``provenance`` says what made the numbers: hpcue's version (and commit, from a checkout), the
libraries, hosts and devices, when the first stage started and the last finished, and the
sha256 of the resolved config and of the clean data's meta.json.
"""

from __future__ import annotations

from typing import Any

from hpcue.evaluation.verdict import verdict
from hpcue.stages.context import StageContext
from hpcue.stages.rundir import STAGES


def collect_results(ctx: StageContext, evaluate: dict[str, Any]) -> dict[str, Any]:
    """The earlier stages' records (read back) and the evaluate record just made."""
    cfg, topo = ctx.cfg, ctx.topology
    records = {stage: ctx.run.read_record(stage) for stage in STAGES if stage != "evaluate"}
    records["evaluate"] = evaluate  # just made, not yet written
    epsilon = records["train"].get("epsilon", cfg.train.epsilon)
    provenance = dict(evaluate.get("provenance", {}))
    provenance["started"] = records["cluster"].get("provenance", {}).get(
        "started", provenance.get("started"))
    provenance["data_meta_sha256"] = evaluate.get("inputs", {}).get("data")
    origin = records["cluster"].get("surrogate_origin")  # older records have none
    out = {
        "name": cfg.name,
        "dataset": cfg.data.dataset,
        "seed": cfg.seed,
        # which attack made the unlearnable set (arm "uc" holds its victims whatever it is),
        # whether it read the labels, its settings as resolved, and the time stage 1 took
        "attack": records["train"].get("attack", {"name": "uc", "uses_labels": False}),
        "attack_settings": records["train"].get("settings"),
        "attack_seconds": records["train"].get("seconds"),
        # what the artifacts were made with (the records; a stage command never builds on an
        # earlier stage made under other settings: stages/provenance.py)
        # (records written by an older hpcue lack some: the config, which they were checked
        # against, fills in)
        "num_clusters": records["cluster"].get("num_clusters", cfg.cluster.num_clusters),
        "num_classes": len(ctx.data.classes),
        "epsilon": epsilon,
        "epsilon_255": round(epsilon * 255, 3),
        "perturbation_channels": records["train"].get("perturbation_channels", 3),
        "augment": records["train"].get("augment", cfg.data.augment),
        "global_batch_size": records["train"]["batch_plan"]["global_batch_size"],
        "world_size": topo.world_size,
        "launcher": topo.launcher,
        "num_nodes": topo.num_nodes,
        "surrogate": cfg.surrogate.arch,
        "surrogate_pretraining": records["cluster"]["surrogate_pretraining"],
        # what the surrogate was trained on, with which labels, its weights' sha256; UC's
        # threat model needs saw_protected_labels false (None: a given file, unknown)
        "surrogate_training": origin,
        "surrogate_saw_protected_labels": (origin or {}).get("saw_protected_labels"),
        "victim": cfg.victim.arch,
        "cluster_purity": records["cluster"]["cluster_purity"],
        "cluster_nmi": records["cluster"]["cluster_nmi"],
        # means over the victim seeds; "victims" holds every arm's per-seed values, std, 95% CI
        "clean_test_acc": evaluate["clean_test_acc"],
        "unlearnable_test_acc": evaluate["unlearnable_test_acc"],
        "accuracy_drop": round(evaluate["clean_test_acc"] - evaluate["unlearnable_test_acc"], 4),
        "worst_case_unlearnable_test_acc": evaluate["worst_case_unlearnable_test_acc"],
        "worst_case_defense": evaluate["worst_case_defense"],
        "baselines": evaluate["baselines"],
        "uc_advantage_over_random": evaluate.get("uc_advantage_over_random"),
        "uc_below_clean": evaluate.get("uc_below_clean"),
        "worst_case_advantage_over_random": evaluate.get("worst_case_advantage_over_random"),
        "worst_case_below_clean": evaluate.get("worst_case_below_clean"),
        # victim.mixed: each share p of unlearnable images among clean ones, and its accuracy
        "mixed": evaluate.get("mixed", []),
        # victim.contrastive: the contrastive learners' setup and figures (their arms are in
        # "victims" as <method>:<set>); the worst case over every learner (victim.arch,
        # victim.other_archs, the contrastive ones) on the uc set
        "contrastive": evaluate.get("contrastive"),
        # victim.other_archs: each architecture's paired drop (its arms: <arch>:clean, :uc)
        "other_archs": evaluate.get("other_archs"),
        # victim.ud: each set's Unlearnable Distance to the clean set, and the SAL it is from
        "ud": evaluate.get("ud"),
        "worst_case_over_learners": evaluate.get("worst_case_over_learners"),
        "defenses": evaluate.get("defenses", {}),
        "defenses_not_trained": evaluate.get("defenses_not_trained", {}),
        "interval_method": evaluate.get("interval_method"),
        # what a reader of the figures must know (a small test set); the run prints each last
        "warnings": evaluate.get("warnings", []),
        "victim_seeds": evaluate["victim_seeds"],
        "victims": evaluate["victims"],
        "victim_curves": evaluate["victim_curves"],
        "stage1_images_per_second": records["train"]["images_per_second"],
        "max_abs_pixel_change_255": records["generate"]["max_abs_pixel_change_255"],
        "psnr_db": records["generate"]["psnr_db"],
        "ssim": records["generate"]["ssim"],
        "seconds": {stage: records[stage]["seconds"] for stage in STAGES},
        "stage1_batch": records["train"]["batch_plan"],
        # stage 1's optimizer, and its budget: epochs or steps, and the steps it took
        "stage1_optimizer": records["train"].get("optimizer", "adamw"),
        "stage1_budget": records["train"].get("budget"),
        "victim_batch": evaluate["batch_plan"],
        "provenance": provenance,
    }
    out["verdict"] = verdict(out)
    return out
