"""results.json: the run's headline numbers, from the stage records."""

from __future__ import annotations

from typing import Any

from hpcue.stages.context import StageContext
from hpcue.stages.rundir import STAGES


def collect_results(ctx: StageContext, evaluate: dict[str, Any]) -> dict[str, Any]:
    """The earlier stages' records (read back) and the evaluate record just made."""
    cfg, topo = ctx.cfg, ctx.topology
    records = {stage: ctx.run.read_record(stage) for stage in STAGES if stage != "evaluate"}
    records["evaluate"] = evaluate  # just made, not yet written
    return {
        "name": cfg.name,
        "dataset": cfg.data.dataset,
        "seed": cfg.seed,
        # what the artifacts were made with (the records; a stage command never builds on an
        # earlier stage made under other settings: stages/provenance.py)
        # (records written by an older hpcue lack some: the config, which they were checked
        # against, fills in)
        "num_clusters": records["cluster"].get("num_clusters", cfg.cluster.num_clusters),
        "epsilon": records["train"].get("epsilon", cfg.train.epsilon),
        "perturbation_channels": records["train"].get("perturbation_channels", 3),
        "augment": records["train"].get("augment", cfg.data.augment),
        "global_batch_size": records["train"]["batch_plan"]["global_batch_size"],
        "world_size": topo.world_size,
        "launcher": topo.launcher,
        "num_nodes": topo.num_nodes,
        "surrogate": cfg.surrogate.arch,
        "surrogate_pretraining": records["cluster"]["surrogate_pretraining"],
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
        "victim_seeds": evaluate["victim_seeds"],
        "victims": evaluate["victims"],
        "victim_curves": evaluate["victim_curves"],
        "stage1_images_per_second": records["train"]["images_per_second"],
        "max_abs_pixel_change": records["generate"]["max_abs_pixel_change"],
        "psnr_db": records["generate"]["psnr_db"],
        "ssim": records["generate"]["ssim"],
        "seconds": {stage: records[stage]["seconds"] for stage in STAGES},
        "stage1_batch": records["train"]["batch_plan"],
        "victim_batch": evaluate["batch_plan"],
    }
