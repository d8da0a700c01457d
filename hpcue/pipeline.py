"""Runs the stages in order over one run directory, and summarises the result.

The pipeline owns what every stage shares: the context (built once per command), seeding,
timing, writing each stage's record on rank 0 (and results.json after the last stage), and the
barrier that ends a stage. A stage only does its work: ``run(ctx) -> record``.
"""

from __future__ import annotations

import errno
import shutil
import textwrap
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import lightning as L
import torch

from hpcue import console
from hpcue.config import ConfigError, RunConfig, load_config, save_config
from hpcue.distributed import collectives
from hpcue.distributed.topology import Topology, activate, detect, init_process_group
from hpcue.errors import DiskFullError, HpcueError
from hpcue.io import exclusive, read_json
from hpcue.stages import cluster, evaluate, generate, train
from hpcue.stages.artifacts import write_results
from hpcue.stages.context import StageContext
from hpcue.stages.inputs import preflight
from hpcue.stages.provenance import (
    changed_keys,
    check_earlier_stages,
    config_sha256,
    config_slice,
    environment,
    file_digests,
    flat_config,
    now,
)
from hpcue.stages.results import collect_results
from hpcue.stages.rundir import STAGES, RunDir, StageInputError

STAGE_RUNNERS: dict[str, Callable[[StageContext], dict]] = dict(zip(
    STAGES, (cluster.run, train.run, generate.run, evaluate.run), strict=True))


def start(cfg: RunConfig, say: bool = True) -> Topology:
    """Find the launcher's topology, join the process group, say what was found (rank 0).

    cuDNN autotunes its kernels only when the run need not be deterministic.
    """
    topo = detect(cfg.runtime.launcher, cfg.runtime.accelerator)
    init_process_group(topo, cfg.runtime.timeout_s, cfg.runtime.setup_timeout_s)
    activate(topo)
    if topo.device.startswith("cuda"):
        torch.backends.cudnn.benchmark = cfg.runtime.deterministic is False
    if topo.is_main and say:
        console.say(topo.summary())
    return topo


# bad input (config, data, missing files or weights, a diverged loss) found by a stage: a run
# directory it just created goes again. Any failure but a signal gives an existing directory
# back what the stage replaced; a signal (a job's wall time) keeps it as it is, to resume.
INPUT_ERRORS = (HpcueError, FileNotFoundError)


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
        ctx.run.drop_replaced()
    collectives.barrier()


@contextmanager
def holding(run: RunDir, stage: str) -> Iterator[bool]:
    """Rank 0 holds the run directory's lock while the command runs, so two commands never
    work in one directory; yields whether this command created the directory (on every rank).

    Only the cluster stage (or ``hpcue run``) starts a run directory.
    """
    locks = ExitStack()

    def take() -> bool:
        created = not run.root.exists()
        if created and stage != STAGES[0]:
            raise StageInputError(f"run directory {run.root} does not exist: start with "
                                  f"`hpcue cluster --out {run.root}` or `hpcue run`")
        run.root.mkdir(parents=True, exist_ok=True)
        locks.enter_context(exclusive(run.lock, f"run directory {run.root}"))
        return created

    with locks:
        yield collectives.on_main(take, f"locking {run.root}")


def finished_from(run: RunDir, stage: str) -> list[str]:
    """The stages from ``stage`` on whose results are finished (have a record) in ``run``."""
    return [s for s in STAGES[STAGES.index(stage):] if run.stage_record(s).is_file()]


def refuse_replacing(run: RunDir, stage: str) -> None:
    """``hpcue <stage>`` without ``--force`` never replaces finished results: it names them."""
    finished = finished_from(run, stage)
    if not finished:
        return
    paths = [path for s in finished for path in (*run.stage_outputs(s), run.stage_record(s))]
    # results.json first: the file a user would miss most
    paths.sort(key=lambda path: path != run.results)
    files = [str(path.relative_to(run.root)) for path in paths if path.exists()]
    raise StageInputError(f"{run.root}: `hpcue {stage}` would replace the finished results of "
                          f"{', '.join(finished)} ({', '.join(files)}); add --force to replace "
                          f"them, or give another --out")


def _stage(stage: str, cfg: RunConfig, ctx: StageContext, created: bool,
           force: bool = True) -> Path:
    """Run one stage in a locked run directory; rank 0 decides what is kept, the others follow.

    A stage that runs again invalidates itself and every later stage (records, outputs and
    epoch checkpoints), so nothing derived from its old outputs is skipped or resumed later.
    Everything the stage needs is checked before anything is cleared, and what it clears is
    set aside until it succeeds: a failure while it runs (bad input, a full disk, a crash; not
    a signal) puts it all back, and bad input in a directory this command created removes it.
    Without ``force`` (a stage command without --force) finished results are never replaced.
    """
    run = ctx.run

    def claim() -> None:
        if run.config.is_file():  # an hpcue run directory: nothing earlier from other settings
            check_earlier_stages(cfg, run, stage)
            if not force:
                refuse_replacing(run, stage)
        run.drop_replaced()  # left by a command that crashed or was stopped: superseded now
        if run.config.is_file():
            run.set_aside(run.config, copy=True)
            if changed_keys(flat_config(load_config(run.config)), flat_config(cfg)):
                # other settings: nothing earlier may be resumed, by this stage or later ones
                run.set_aside(run.checkpoints)
            cleared = run.clear_from(stage)
            if cleared:
                console.say(f"replacing earlier results of: {', '.join(cleared)}")
        save_config(cfg, run.config)

    claimed = False
    try:
        preflight(cfg, run, stage)
        collectives.on_main(claim, f"setting up {run.root}")
        claimed = True
        execute(stage, ctx)
    except Exception as exc:
        if collectives.is_main():
            if created and isinstance(exc, INPUT_ERRORS):
                shutil.rmtree(run.root, ignore_errors=True)
            elif claimed and run.restore_replaced():  # only what this command set aside
                console.say(f"{stage} failed: restored what it replaced in {run.root}")
        if (isinstance(exc, OSError) and not isinstance(exc, DiskFullError)
                and exc.errno in (errno.ENOSPC, errno.EDQUOT)):  # Lightning's own writes
            raise DiskFullError(exc.errno, f"no space left on the file system of {run.root} "
                                           f"({exc}); free space and rerun") from None
        raise
    return run.stage_outputs(stage)[0]  # the file or folder the next stage reads


def run_stage(stage: str, cfg: RunConfig, out: Path, force: bool = False) -> Path:
    """``hpcue <stage>``: one stage on a run directory (the cluster stage may start one);
    finished results there are replaced only with ``force``."""
    run = RunDir(Path(out))
    ctx = StageContext.build(cfg, run)
    with holding(run, stage) as created:
        return _stage(stage, cfg, ctx, created, force)


def check_same_config(cfg: RunConfig, run: RunDir) -> None:
    """Resuming is only sound into a run directory written with the same config.

    A directory whose stages never finished holds nothing worth protecting: it is reused.
    """
    if not run.config.is_file() or not any(run.stage_record(s).is_file() for s in STAGES):
        return
    there, now = flat_config(load_config(run.config)), flat_config(cfg)
    keys = changed_keys(there, now)
    if keys:
        shown = ", ".join(f"{k}: {there.get(k)!r} there, {now.get(k)!r} now" for k in keys[:5])
        more = f" (and {len(keys) - 5} more)" if len(keys) > 5 else ""
        raise ConfigError(f"{run.root} holds a run with another config ({run.config}): "
                          f"{shown}{more}; use another --out, or the same config to resume it")


def run_pipeline(cfg: RunConfig, out: Path) -> Path:
    """cluster -> train -> generate -> evaluate; returns the path of results.json.

    Rerun on the same run directory, it skips the stages that finished and resumes a stopped
    training from its last epoch checkpoint, so a job killed by its wall time just runs again.
    Rank 0 decides what to skip, so ranks never disagree about a file one of them saw late.
    """
    run = RunDir(Path(out))
    ctx = StageContext.build(cfg, run)

    def plan() -> list[str]:
        check_same_config(cfg, run)
        # everything from the first unfinished stage on runs (again)
        first = next((i for i, s in enumerate(STAGES) if not run.stage_record(s).is_file()),
                     len(STAGES))
        for stage in STAGES[:first]:
            console.say(f"stage {stage}: done earlier ({run.stage_record(stage)})")
        return list(STAGES[first:])

    with holding(run, STAGES[0]) as created:
        for stage in collectives.on_main(plan, f"reading {run.root}"):
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


def summary_table(results: dict) -> str:
    """The short table ``hpcue run`` ends with: accuracies as mean ± std over victim seeds."""
    victims = results["victims"]
    psnr = results["psnr_db"]
    rows = [
        ("dataset", results["dataset"]),
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
