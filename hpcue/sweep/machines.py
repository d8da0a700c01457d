"""Machine profiles, and what a scheduler directive takes from them.

A profile comes from the user's folders (``--machines``, else ``$HPCUE_MACHINES``), then the
shipped ones (``shipped.py``): a site's own profile needs no change to hpcue.

Every value that reaches a job script is checked on loading against what the scheduler accepts
(``plain_name``, ``scheduler_word``, ``one_line``), and again when it is rendered: a newline in
an account would start a command of its own and end the ``#SBATCH``/``#BSUB`` block. A
profile's ``launch`` and ``setup`` lines are shell code: the profile is trusted code that the
user chose, like a script they run, so those lines are only held to one line each.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from hpcue.config import (
    ConfigError,
    RuntimeConfig,
    format_errors,
    plain_name,
    read_yaml_mapping,
)
from hpcue.sweep.shipped import machines_dir, names

#: the user's machine-profile folders when --machines is not given (several: ':'-separated)
MACHINES_ENV = "HPCUE_MACHINES"
#: the placeholders a launch line may use
LAUNCH_FIELDS = ("world_size", "ranks_per_node", "nodes", "cpus_per_task")
#: minutes before the wall time the job script is warned (its requeue signal)
WARNING_MINUTES = {"slurm": 2, "lsf": 5}


#: one value of a #SBATCH/#BSUB directive (account, queue, one partition): what Slurm and LSF
#: take in names, and nothing a shell or the directive parser reads as something else
SCHEDULER_WORD = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]*")
#: C0 control characters but the tab, and DEL: a newline or carriage return ends a script line
CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def scheduler_word(value: str) -> str:
    """``value`` if a scheduler directive can take it as one word (``SCHEDULER_WORD``)."""
    if not SCHEDULER_WORD.fullmatch(value):
        raise ValueError(f"{value!r} is not a plain name: letters, digits, _ . + - only, "
                         f"not starting with . + -")
    return value


def scheduler_words(value: str) -> str:
    """A comma-separated list of scheduler words (Slurm takes several partitions so)."""
    for word in value.split(","):
        if not SCHEDULER_WORD.fullmatch(word):
            raise ValueError(f"{value!r} is not a comma-separated list of plain names: "
                             f"letters, digits, _ . + - only, not starting with . + -")
    return value


def one_line(value: str) -> str:
    """A line of a profile's own shell code: anything but a control character (a newline)."""
    if CONTROL.search(value):
        raise ValueError(f"{value!r} holds a control character (a newline?): one line each")
    return value


class Strict(BaseModel):
    """A YAML file's schema (profile, spec): an unknown key, a typo, is an error."""

    model_config = ConfigDict(extra="forbid")


StrictModel = TypeVar("StrictModel", bound=Strict)


def read_model(model: type[StrictModel], path: Path, what: str) -> StrictModel:
    """``path``'s YAML mapping as ``model``; what is wrong in it is one ConfigError naming it."""
    try:
        return model.model_validate(read_yaml_mapping(path, what))
    except ValidationError as exc:
        raise ConfigError(format_errors(exc, str(path))) from None


class MachineProfile(Strict):
    """A machine: its scheduler, sizes, and the shell lines each job runs (trusted code)."""

    name: str
    scheduler: Literal["slurm", "lsf"]
    gpus_per_node: int = Field(ge=0)
    cores_per_node: int = Field(ge=1)
    ranks_per_node: int = Field(ge=1)
    cpus_per_task: int = Field(1, ge=1)
    # srun/jsrun line; {world_size}, {ranks_per_node}, {nodes}, {cpus_per_task}
    launch: str
    account_required: bool = False
    partition: str | None = None      # Slurm
    # Slurm's --mem for each node of a job ("0": all of the node's; "120G"); unset, the
    # site's default, often a few GB a core, which a data loader of images can outgrow
    mem_per_node: str | None = None
    queue: str | None = None          # LSF
    setup: list[str] = []             # environment lines: modules, venv
    # every point's runtime.max_micro_batch unless the spec sets it: what one device holds
    max_micro_batch: int | Literal["auto"] | None = None
    # every point's runtime.precision unless the spec sets it: what the GPUs compute fast in
    precision: str | None = None

    @field_validator("launch")
    @classmethod
    def _launch(cls, value: str) -> str:
        try:
            value.format(**dict.fromkeys(LAUNCH_FIELDS, 2))
        except Exception as exc:  # str.format raises several kinds; each is this one error
            fields = ", ".join(f"{{{f}}}" for f in LAUNCH_FIELDS)
            raise ValueError(f"launch line {value!r} may only use {fields} (literal braces "
                             f"doubled: {{{{ }}}}); failed on {exc}") from None
        return one_line(value)

    @field_validator("precision")
    @classmethod
    def _precision(cls, value: str | None) -> str | None:
        """A precision the run config takes (checked by it: one list of them)."""
        if value is not None:
            try:
                RuntimeConfig(precision=value)
            except ValidationError as exc:
                raise ValueError(exc.errors()[0]["msg"]) from None
        return value

    _name = field_validator("name")(plain_name)

    @field_validator("mem_per_node")
    @classmethod
    def _mem(cls, value: str | None) -> str | None:
        """What --mem takes: a whole number, optionally K, M, G or T (0: the whole node)."""
        if value is not None and not re.fullmatch(r"\d+[KMGT]?", str(value)):
            raise ValueError(f"mem_per_node {value!r}: a whole number with an optional unit "
                             f"K, M, G or T (e.g. 120G; 0: all of a node's memory)")
        return None if value is None else str(value)

    @field_validator("queue", "partition")
    @classmethod
    def _scheduler_names(cls, value: str | None, info: ValidationInfo) -> str | None:
        check = scheduler_words if info.field_name == "partition" else scheduler_word
        return value if value is None else check(value)

    @field_validator("setup")
    @classmethod
    def _setup(cls, lines: list[str]) -> list[str]:
        return [one_line(line) for line in lines]


def user_machine_dirs(given: Path | Sequence[Path] | None = None) -> list[Path]:
    """The user's profile folders, searched before the shipped ones: ``given`` (--machines),
    else ``$HPCUE_MACHINES``. A folder that is not there is an error, not a silent skip."""
    if given is None:
        where = f"${MACHINES_ENV}"
        folders = [Path(p) for p in os.environ.get(MACHINES_ENV, "").split(os.pathsep) if p]
    else:
        where = "--machines"
        folders = [Path(given)] if isinstance(given, (str, Path)) else [Path(p) for p in given]
    for folder in folders:
        if not folder.is_dir():
            raise ConfigError(f"{where}: {folder} is not a folder (of machine profiles)")
    return folders


def find_machine(name: str, user_dirs: Sequence[Path] = ()) -> Path:
    """The profile ``<name>.yaml`` in the user's folders, in order, then the shipped ones."""
    folders = [*user_dirs, machines_dir()]
    for folder in folders:
        if (folder / f"{name}.yaml").is_file():
            return folder / f"{name}.yaml"
    known = sorted({n for folder in folders for n in names(folder)})
    looked = ", ".join([*map(str, user_dirs), f"{machines_dir()} (shipped)"])
    raise ConfigError(f"unknown machine profile {name!r} (known: {', '.join(known) or 'none'}; "
                      f"looked in {looked}; your own: --machines DIR or ${MACHINES_ENV})")


def load_machine(path: Path) -> MachineProfile:
    return read_model(MachineProfile, path, "machine profile")
