"""The rerun guard: may a stage run on this run directory, and what does it replace.

Every decision about an existing run directory is taken here, by rank 0, and nowhere else:
which stages ``hpcue run`` still has to run (``remaining``), whether a stage may build on the
earlier stages and replace finished results, what it sets aside before it runs, and what is
put back when it fails. The pipeline calls one entry per stage, ``guarded``, around the stage.

What a stage replaces is never deleted before the stage has succeeded: it is moved into
``RunDir.replaced`` (listed in ``moved.json``), put back if the stage fails for any reason but
a signal, and dropped when it succeeds. A signal (a job's wall time) keeps everything as it is,
so the next command resumes.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from hpcue import console
from hpcue.config import ConfigError, RunConfig, load_config, save_config
from hpcue.distributed import collectives
from hpcue.errors import HpcueError
from hpcue.io import atomic_write_json, exclusive, read_json
from hpcue.stages.inputs import preflight
from hpcue.stages.rundir import STAGES, RunDir, StageInputError
from hpcue.stages.slices import config_slice, flat_config

# bad input (config, data, missing files or weights, a diverged loss) found by a stage: a run
# directory it just created goes again. Any failure but a signal gives an existing directory
# back what the stage replaced; a signal (a job's wall time) keeps it as it is, to resume.
INPUT_ERRORS = (HpcueError, FileNotFoundError)

# how the work is spread or sped up, not what it computes (float order at most): a run
# resumes under the other value
EXECUTION_ONLY = frozenset({"train.generator_parallel", "victim.spread", "runtime.channels_last",
                            "runtime.compile", "runtime.fused_optimizer", "runtime.pin_memory"})


def changed_keys(recorded: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """The dotted keys whose values differ, but those that only say how the work is spread."""
    return sorted(k for k in recorded.keys() | now.keys()
                  if recorded.get(k) != now.get(k) and k not in EXECUTION_ONLY)


# -- may it run --------------------------------------------------------------------------------

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


def check_earlier_stages(cfg: RunConfig, run: RunDir, stage: str) -> None:
    """Refuse to run ``stage`` on top of an earlier stage made under other settings, naming the
    keys that differ and the stage to rerun (the earliest such stage)."""
    for earlier in STAGES[:STAGES.index(stage)]:
        path = run.stage_record(earlier)
        if not path.is_file():
            continue
        recorded = run.read_record(earlier).get("config")
        if recorded is None:  # written before records kept their slice: nothing to compare
            continue
        keys = changed_keys(recorded, config_slice(cfg, earlier))
        if keys:
            shown = ", ".join(f"{k} ({recorded.get(k)!r} -> {config_slice(cfg, earlier).get(k)!r})"
                              for k in keys[:4])
            raise ConfigError(f"{run.root}: stage {earlier} was made with other settings than "
                              f"`hpcue {stage}` would build on: {shown}; rerun `hpcue {earlier} "
                              f"--out {run.root}` with them first (it clears the later stages)")


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


def remaining(cfg: RunConfig, run: RunDir) -> list[str]:
    """``hpcue run``'s stages still to run here: everything from the first unfinished one on
    (a directory of another config is refused)."""
    check_same_config(cfg, run)
    first = next((i for i, s in enumerate(STAGES) if not run.stage_record(s).is_file()),
                 len(STAGES))
    for stage in STAGES[:first]:
        console.say(f"stage {stage}: done earlier ({run.stage_record(stage)})")
    return list(STAGES[first:])


# -- what it replaces --------------------------------------------------------------------------

def set_aside(run: RunDir, path: Path, copy: bool = False) -> None:
    """Move (or copy) ``path`` into ``run.replaced``, so a stage that fails can put it back
    (``restore_replaced``) and one that succeeds drops it."""
    if not path.exists():
        return
    manifest = run.replaced / "moved.json"
    moved = read_json(manifest) if manifest.is_file() else []
    run.replaced.mkdir(exist_ok=True)
    kept = run.replaced / str(len(moved))
    if copy:
        shutil.copy2(path, kept)
    else:
        os.replace(path, kept)
    atomic_write_json(manifest, [*moved, str(path.relative_to(run.root))])


def restore_replaced(run: RunDir) -> list[str]:
    """Put back what the failed stage's claim set aside, over what the stage wrote since."""
    manifest = run.replaced / "moved.json"
    if not manifest.is_file():
        return []
    moved = read_json(manifest)
    known = {str(p.relative_to(run.root)) for s in STAGES
             for p in (run.stage_record(s), *run.stage_outputs(s))}
    known |= {str(run.config.relative_to(run.root)), str(run.checkpoints.relative_to(run.root))}
    strange = [rel for rel in moved if rel not in known] if isinstance(moved, list) else [moved]
    if strange:  # only hpcue writes moved.json: never follow one that names other paths
        raise StageInputError(f"{manifest}: names {strange[:3]}, not files of a run "
                              f"directory; nothing was restored (remove {run.replaced})")
    for i, rel in enumerate(moved):
        target = run.root / rel
        _remove(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(run.replaced / str(i), target)
    shutil.rmtree(run.replaced)
    return moved


def drop_replaced(run: RunDir) -> None:
    shutil.rmtree(run.replaced, ignore_errors=True)


def clear_from(run: RunDir, stage: str) -> list[str]:
    """Set aside what must not survive ``stage``; returns the stages whose finished results
    were cleared.

    Later stages' files were derived from this stage's old outputs: their records, outputs
    and epoch checkpoints go. The stage itself keeps its epoch checkpoints (a stopped training
    resumes) unless it had finished, in which case it starts afresh.
    """
    cleared: list[str] = []
    if not run.config.is_file():  # not an hpcue run directory: touch nothing
        return cleared
    for name in STAGES[STAGES.index(stage):]:
        record = run.stage_record(name)
        if name == stage and not record.exists():
            continue
        if record.exists():
            cleared.append(name)
        for path in (record, *run.stage_outputs(name)):
            set_aside(run, path)
    return cleared


def admit(cfg: RunConfig, run: RunDir, stage: str, force: bool) -> None:
    """Rank 0, before ``stage`` runs: refuse or set aside, then save the run's config.

    A stage that runs again invalidates itself and every later stage (records, outputs and
    epoch checkpoints), so nothing derived from its old outputs is skipped or resumed later.
    Without ``force`` (a stage command without --force) finished results are never replaced.
    """
    if run.config.is_file():  # an hpcue run directory: nothing earlier from other settings
        check_earlier_stages(cfg, run, stage)
        if not force:
            refuse_replacing(run, stage)
    drop_replaced(run)  # left by a command that crashed or was stopped: superseded now
    if run.config.is_file():
        set_aside(run, run.config, copy=True)
        if changed_keys(flat_config(load_config(run.config)), flat_config(cfg)):
            # other settings: nothing earlier may be resumed, by this stage or later ones
            set_aside(run, run.checkpoints)
        cleared = clear_from(run, stage)
        if cleared:
            console.say(f"replacing earlier results of: {', '.join(cleared)}")
    save_config(cfg, run.config)


# -- the entries -------------------------------------------------------------------------------

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


@contextmanager
def guarded(cfg: RunConfig, run: RunDir, stage: str, *, created: bool,
            force: bool) -> Iterator[None]:
    """Around one stage in a locked run directory; rank 0 decides, the others follow.

    Everything the stage needs is checked before anything is cleared (``preflight``), and what
    it clears is set aside until it succeeds: a failure while it runs (bad input, a full disk,
    a crash; not a signal) puts it all back, and bad input in a directory this command
    created removes it.
    """
    claimed = False
    try:
        preflight(cfg, run, stage)
        collectives.on_main(lambda: admit(cfg, run, stage, force), f"setting up {run.root}")
        claimed = True
        yield
    except Exception as exc:
        if collectives.is_main():
            if created and isinstance(exc, INPUT_ERRORS):
                shutil.rmtree(run.root, ignore_errors=True)
            elif claimed and restore_replaced(run):  # only what this command set aside
                console.say(f"{stage} failed: restored what it replaced in {run.root}")
        raise
    if collectives.is_main():
        drop_replaced(run)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
