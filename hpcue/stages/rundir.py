"""The run directory: one place that names every file a stage writes or reads.

Each stage reads the previous stage's files and writes its own atomically (``hpcue.io``), so an
interrupted stage never leaves a file the next one would trust. Sweeps and reports ask
``RunDir`` for these names instead of spelling them.
"""

from __future__ import annotations

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
        """What a stage replaces waits here until it succeeds (restored on failure; the rerun
        guard, stages/guard.py, moves things in and out)."""
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

