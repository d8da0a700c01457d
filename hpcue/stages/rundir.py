"""The run directory: one place that names every file a stage writes or reads.

Each stage reads the previous stage's files and writes its own atomically (``hpcue.io``), so an
interrupted stage never leaves a file the next one would trust. Sweeps and reports ask
``RunDir`` for these names instead of spelling them.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from hpcue.errors import HpcueError
from hpcue.io import atomic_write_json, read_json

#: The pipeline's stages in order; each reads what the ones before it wrote.
STAGES = ("cluster", "train", "generate", "evaluate")


class StageInputError(HpcueError, FileNotFoundError):
    """A stage was asked to run before the stage it depends on wrote its files."""


@dataclass(frozen=True)
class RunDir:
    """Names of the files in one run directory."""

    root: Path
    #: the file a finished run ends with; reports and sweeps look for it by this name
    RESULTS: ClassVar[str] = "results.json"

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def surrogate(self) -> Path:
        return self.root / "surrogate.pt"

    @property
    def clusters(self) -> Path:
        return self.root / "clusters.pt"

    @property
    def perturbations(self) -> Path:
        return self.root / "perturbations.pt"

    @property
    def unlearnable(self) -> Path:
        return self.root / "unlearnable"

    @property
    def preview(self) -> Path:
        return self.root / "preview.png"

    @property
    def victim_curves(self) -> Path:
        return self.root / "victim_curves.png"

    @property
    def results(self) -> Path:
        return self.root / self.RESULTS

    @property
    def finished(self) -> bool:
        """A run is finished when its results.json exists (written last, atomically)."""
        return self.results.is_file()

    @property
    def lock(self) -> Path:
        """Held (advisory) by the one hpcue command working in this directory."""
        return self.root / ".hpcue.lock"

    @property
    def replaced(self) -> Path:
        """What a stage replaces waits here until it succeeds (restored on bad input)."""
        return self.root / ".replaced"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    def stage_checkpoints(self, stage: str) -> Path:
        """Epoch checkpoints of one training (``train``, ``surrogate``, ``victims`` ...)."""
        return self.checkpoints / stage

    def stage_outputs(self, stage: str) -> list[Path]:
        """What ``stage`` writes, so that a rerun can clear what was derived from it."""
        return {
            "cluster": [self.clusters, self.surrogate, self.stage_checkpoints("surrogate")],
            "train": [self.perturbations, self.stage_checkpoints("train")],
            "generate": [self.unlearnable, self.preview],
            "evaluate": [self.results, self.victim_curves, self.stage_checkpoints("victims")],
        }[stage]

    def stage_inputs(self, stage: str) -> dict[str, Path]:
        """The files of this directory ``stage`` reads (besides the data), by label."""
        return {
            "cluster": {},
            "train": {"clusters": self.clusters, "surrogate": self.surrogate},
            "generate": {"clusters": self.clusters, "perturbations": self.perturbations},
            "evaluate": {"clusters": self.clusters, "unlearnable": self.unlearnable},
        }[stage]

    def producer(self, path: Path) -> str:
        """The stage that writes ``path``."""
        return next(s for s in STAGES if path in self.stage_outputs(s))

    def set_aside(self, path: Path, copy: bool = False) -> None:
        """Move (or copy) ``path`` into ``replaced``, so a stage that fails on bad input can
        put it back (``restore_replaced``) and one that succeeds drops it."""
        if not path.exists():
            return
        manifest = self.replaced / "moved.json"
        moved = read_json(manifest) if manifest.is_file() else []
        self.replaced.mkdir(exist_ok=True)
        kept = self.replaced / str(len(moved))
        if copy:
            shutil.copy2(path, kept)
        else:
            os.replace(path, kept)
        atomic_write_json(manifest, [*moved, str(path.relative_to(self.root))])

    def restore_replaced(self) -> list[str]:
        """Put back what the failed stage's claim set aside, over what the stage wrote since."""
        manifest = self.replaced / "moved.json"
        if not manifest.is_file():
            return []
        moved = read_json(manifest)
        known = {str(p.relative_to(self.root)) for s in STAGES
                 for p in (self.stage_record(s), *self.stage_outputs(s))}
        known |= {str(self.config.relative_to(self.root)),
                  str(self.checkpoints.relative_to(self.root))}
        strange = [rel for rel in moved if rel not in known] if isinstance(moved, list) else [moved]
        if strange:  # only hpcue writes moved.json: never follow one that names other paths
            raise StageInputError(f"{manifest}: names {strange[:3]}, not files of a run "
                                  f"directory; nothing was restored (remove {self.replaced})")
        for i, rel in enumerate(moved):
            target = self.root / rel
            _remove(target)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(self.replaced / str(i), target)
        shutil.rmtree(self.replaced)
        return moved

    def drop_replaced(self) -> None:
        shutil.rmtree(self.replaced, ignore_errors=True)

    def clear_from(self, stage: str) -> list[str]:
        """Called (rank 0) before ``stage`` runs: set aside what must not survive it.

        Later stages' files were derived from this stage's old outputs: their records,
        outputs and epoch checkpoints go. The stage itself keeps its epoch checkpoints (a
        stopped training resumes) unless it had finished, in which case it starts afresh.
        What goes is moved to ``replaced``, not deleted, until the stage has succeeded.
        Returns the stages whose finished results were cleared.
        """
        cleared: list[str] = []
        if not self.config.is_file():  # not an hpcue run directory: touch nothing
            return cleared
        for name in STAGES[STAGES.index(stage):]:
            record = self.stage_record(name)
            if name == stage and not record.exists():
                continue
            if record.exists():
                cleared.append(name)
            for path in (record, *self.stage_outputs(name)):
                self.set_aside(path)
        return cleared

    def stage_record(self, stage: str) -> Path:
        return self.root / "stages" / f"{stage}.json"

    def require(self, path: Path, stage: str) -> Path:
        """Fail with the stage to run first when an input file is missing."""
        if not path.exists():
            raise StageInputError(
                f"{path} does not exist: run `hpcue {stage} --out {self.root}` first "
                f"(or `hpcue run` for the whole pipeline)"
            )
        return path

    def write_record(self, stage: str, record: dict[str, Any]) -> None:
        atomic_write_json(self.stage_record(stage), record)

    def read_record(self, stage: str) -> dict[str, Any]:
        path = self.require(self.stage_record(stage), stage)
        return read_json(path)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
