"""Runs the stages in order over one run directory, and summarises the result.

The pipeline owns what every stage shares: the context (built once per command), seeding,
timing, writing each stage's record on rank 0 (and results.json after the last stage), and the
barrier that ends a stage. A stage only does its work: ``run(ctx) -> record``.
"""

from __future__ import annotations

import errno
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import lightning as L
import torch

from hpcue import console
from hpcue.config import RunConfig
from hpcue.distributed import collectives
from hpcue.distributed.topology import Topology, activate, detect, init_process_group
from hpcue.errors import DiskFullError
from hpcue.io import read_json
from hpcue.stages import cluster, evaluate, generate, train
from hpcue.stages.artifacts import write_results
from hpcue.stages.context import StageContext
from hpcue.stages.guard import guarded, holding, remaining
from hpcue.stages.provenance import config_sha256, environment, file_digests, now
from hpcue.stages.results import collect_results
from hpcue.stages.rundir import STAGES, RunDir
from hpcue.stages.slices import config_slice
from hpcue.training import speed

STAGE_RUNNERS: dict[str, Callable[[StageContext], dict]] = dict(zip(
    STAGES, (cluster.run, train.run, generate.run, evaluate.run), strict=True))


def start(cfg: RunConfig, say: bool = True) -> Topology:
    """Find the launcher's topology, join the process group, say what was found (rank 0).

    cuDNN autotunes its kernels only when the run need not be deterministic; the speed
    options (training/speed.py) are resolved for this device.
    """
    topo = detect(cfg.runtime.launcher, cfg.runtime.accelerator)
    init_process_group(topo, cfg.runtime.timeout_s, cfg.runtime.setup_timeout_s)
    activate(topo)
    on_gpu = topo.device.startswith("cuda")
    if on_gpu:
        torch.backends.cudnn.benchmark = cfg.runtime.deterministic is False
    r = cfg.runtime
    speed.activate(speed.resolve(r.channels_last, r.compile, r.fused_optimizer, r.pin_memory,
                                 on_gpu))
    if topo.is_main and say:
        console.say(topo.summary())
    return topo


def execute(stage: str, ctx: StageContext) -> None:
    """Seed, run and time one stage; rank 0 writes its record, then every rank waits for it."""
    t0, started = time.perf_counter(), now()
    L.seed_everything(ctx.cfg.seed, workers=True, verbose=False)
    record = STAGE_RUNNERS[stage](ctx)
    record["seconds"] = round(time.perf_counter() - t0, 3)
    record["config"] = config_slice(ctx.cfg, stage)
    record["inputs"] = file_digests(ctx.inputs(stage))
    record["provenance"] = {**environment(ctx.topology), "started": started, "finished": now(),
                            "config_sha256": config_sha256(ctx.cfg)}
    if collectives.is_main():
        if stage == STAGES[-1]:
            # results.json first: a run killed between the two reruns evaluate, never skips it
            write_results(ctx.run, collect_results(ctx, record))
        ctx.run.write_record(stage, record)
    collectives.barrier()


def _stage(stage: str, cfg: RunConfig, ctx: StageContext, created: bool,
           force: bool = True) -> Path:
    """Run one stage under the rerun guard (stages/guard.py): it decides what may run and
    what is replaced, and puts it back if the stage fails."""
    try:
        with guarded(cfg, ctx.run, stage, created=created, force=force):
            execute(stage, ctx)
    except OSError as exc:
        if (not isinstance(exc, DiskFullError)
                and exc.errno in (errno.ENOSPC, errno.EDQUOT)):  # Lightning's own writes
            raise DiskFullError(exc.errno, f"no space left on the file system of "
                                           f"{ctx.run.root} ({exc}); free space and "
                                           f"rerun") from None
        raise
    return ctx.run.stage_outputs(stage)[0]  # the file or folder the next stage reads


def run_stage(stage: str, cfg: RunConfig, out: Path, force: bool = False) -> Path:
    """``hpcue <stage>``: one stage on a run directory (the cluster stage may start one);
    finished results there are replaced only with ``force``."""
    run = RunDir(Path(out))
    ctx = StageContext.build(cfg, run)
    with holding(run, stage) as created:
        return _stage(stage, cfg, ctx, created, force)


def run_pipeline(cfg: RunConfig, out: Path) -> Path:
    """cluster -> train -> generate -> evaluate; returns the path of results.json.

    Rerun on the same run directory, it skips the stages that finished and resumes a stopped
    training from its last epoch checkpoint, so a job killed by its wall time just runs again.
    Rank 0 decides what to skip, so ranks never disagree about a file one of them saw late.
    """
    run = RunDir(Path(out))
    ctx = StageContext.build(cfg, run)

    with holding(run, STAGES[0]) as created:
        for stage in collectives.on_main(lambda: remaining(cfg, run), f"reading {run.root}"):
            if collectives.is_main():
                console.say(f"stage {stage} -> {run.root}")
            _stage(stage, cfg, ctx, created)
            created = False  # later stages found it: a bad input there keeps the earlier ones
    return run.results


def _acc(summary: dict) -> str:
    """mean ± std (n seeds) [95% interval]; one seed has no spread (n/a, never ± 0)."""
    ci = summary.get("ci95")
    interval = f"  95% CI [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""
    spread = f"{summary['std']:.4f}" if summary["n"] > 1 else "n/a"
    return f"{summary['mean']:.4f} ± {spread} (n={summary['n']}){interval}"


def _attack_line(attack: dict | None) -> str:
    """The attack's name and its threat model (the arm "uc" below holds its victims)."""
    attack = attack or {"name": "uc", "uses_labels": False}
    return f"{attack['name']} ({'reads' if attack['uses_labels'] else 'never reads'} the labels)"


def summary_table(results: dict) -> str:
    """The short table ``hpcue run`` ends with: accuracies as mean ± std over victim seeds."""
    victims = results["victims"]
    psnr = results["psnr_db"]
    rows = [
        ("dataset", results["dataset"]),
        ("attack", _attack_line(results.get("attack"))),
        ("clusters (K)", results["num_clusters"]),
        ("epsilon", f"{results['epsilon']:.4f} ({results['epsilon'] * 255:.0f}/255)"),
        ("global batch size", results["global_batch_size"]),
        ("surrogate", f"{results['surrogate']} ({results['surrogate_pretraining']})"),
        ("cluster purity", f"{results['cluster_purity']:.3f}"),
        ("cluster NMI", f"{results['cluster_nmi']:.3f}"),
        ("PSNR / SSIM", f"{'-' if psnr is None else f'{psnr:.1f} dB'} / {results['ssim']:.3f}"),
    ]
    rows += [(f"test acc: {arm}", _acc(summary) + ("  (= uc: not trained)"
                                                  if summary.get("same_as") else ""))
             for arm, summary in victims.items()]
    rows.append(("worst case (UC, defenses)",
                 f"{results['worst_case_unlearnable_test_acc']:.4f} "
                 f"({results['worst_case_defense']})"))
    if results.get("worst_case_over_learners"):
        w = results["worst_case_over_learners"]
        rows.append(("worst case (learners)", f"{w['test_acc']:.4f} ({w['learner']})"))
    if results.get("uc_advantage_over_random"):
        rows.append(("UC below random by", _acc(results["uc_advantage_over_random"])))
    if results.get("surrogate_training"):
        t = results["surrogate_training"]
        rows.append(("surrogate trained on", f"{t['trained_on']}; labels: {t['labels_used']}; "
                     f"saw the protected labels: {t['saw_protected_labels']}"))
    rows.append(("stage-1 images/s", f"{results['stage1_images_per_second']:.1f}"))
    rows += [(f"seconds: {k}", f"{v:.1f}") for k, v in results["seconds"].items()]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k:<{width}}  {v}" for k, v in rows)


def print_summary(results_path: Path) -> None:
    if not collectives.is_main():
        return
    results = read_json(results_path)
    print(f"\nhpcue results ({results_path}):\n{summary_table(results)}", flush=True)
    if results.get("verdict"):
        print("\n" + textwrap.fill(" ".join(results["verdict"]["text"]), width=100), flush=True)
    for warning in results.get("warnings") or []:  # last, where a reader of the figures looks
        console.warn(warning)
