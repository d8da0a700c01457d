"""Sweep tries: specs and machine profiles crafted for ``hpcue sweep render``.

Values that would inject shell commands or ``#SBATCH`` lines, names that escape, empty or
impossible grids; and a ``sweep local`` whose failing point must not count as a success.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import yaml

from .core import REPO, TINY, Case, Ctx, Outcome, Try
from .inputs import write_yaml

#: a spec of each scheduler: digits on the local Slurm profile, and on Summit's LSF
BASES = {"slurm": {"machine": "local"},
         "lsf": {"machine": "summit", "account": "ABC123", "ranks_per_node": 2}}


def sweep_case(ctx: Ctx, spec: dict, scheduler: str = "slurm", profile: dict | None = None,
               command: str = "render") -> Case:
    """``hpcue sweep render`` of a spec in a scratch working directory holding a copy of the
    repository's configs: the spec's configs resolve there whether read from the working
    directory or from the spec's own folder, and a crafted machine profile is found both in
    ``configs/machines`` there and through ``$HPCUE_MACHINES``."""
    cwd = ctx.cwd
    shutil.copytree(REPO / "configs", cwd / "configs")
    data = yaml.safe_load((REPO / "configs/sweeps/digits-local.yaml").read_text())
    data.update({**BASES[scheduler], "global_batch_sizes": [32], "seeds": [0], **spec})
    if profile is not None:
        base = BASES[scheduler]["machine"]
        machine = yaml.safe_load((REPO / f"configs/machines/{base}.yaml").read_text())
        machine.update(profile)
        write_yaml(cwd / "configs/machines/evil.yaml", machine)
        data["machine"] = "evil"
    path = write_yaml(cwd / "spec.yaml", data)
    jobs, runs = ctx.work / "jobs", ctx.work / "runs"
    args = ["sweep", command, str(path), "--runs", str(runs)]
    if command == "render":
        args += ["--scheduler", scheduler, "--out", str(jobs)]
    marker = str(ctx.work / "injected")

    def injected(o: Outcome) -> tuple[str, str] | None:
        for script in jobs.rglob("*") if jobs.is_dir() else []:
            if script.is_file() and marker in script.read_text():
                return "security", f"{script.name} holds the injected command"
        return None
    return Case(args, out=[jobs, runs], markers=[Path(marker)], check=injected, cwd=cwd,
                env={"HPCUE_MACHINES": str(cwd / "configs" / "machines")})


def sweep_try(name: str, *expect: str, spec: dict | None = None, profile: dict | None = None,
              scheduler: str = "slurm", extra: tuple[str, ...] = ()) -> Try:
    def setup(ctx: Ctx) -> Case:
        touch = f"touch {ctx.work / 'injected'}"

        def fill_in(values: dict | None) -> dict | None:
            return None if values is None else json.loads(
                json.dumps(values).replace("TOUCH", touch))
        case = sweep_case(ctx, fill_in(spec) or {}, scheduler, fill_in(profile))
        case.args += list(extra)
        return case
    return Try(f"sweep render: {name}", setup, expect)


def sweep_tries() -> list[Try]:
    def bad_spec(text: str, *expect: str, name: str) -> Try:
        def setup(ctx: Ctx) -> Case:
            case = sweep_case(ctx, {})
            Path(case.args[2]).write_text(text)
            return case
        return Try(f"sweep render: {name}", setup, ("spec.yaml", *expect))

    def point_fails(ctx: Ctx) -> Case:
        case = sweep_case(ctx, {"overrides": [*TINY, "runtime.accelerator=cpu",
                                               f"data.shards={ctx.work / 'no-shards'}"]},
                          command="local")
        case.check, case.one_line = None, False  # each failed point's own error comes first
        return case

    return [
        sweep_try("account with a newline and a command", "account",
                  spec={"account": "abc123\nTOUCH\n#"}),
        sweep_try("account 'abc;touch'", "account", spec={"account": "abc;TOUCH"}),
        sweep_try("partition 'gpu;touch' in a machine profile", "partition",
                  profile={"partition": "gpu;TOUCH"}),
        sweep_try("partition '$(touch)'", "partition", profile={"partition": "$(TOUCH)"}),
        sweep_try("partition with a newline and #SBATCH", "partition",
                  profile={"partition": "gpu\n#SBATCH --account=other"}),
        sweep_try("queue 'batch;touch' (LSF)", "queue", profile={"queue": "batch;TOUCH"},
                  scheduler="lsf"),
        sweep_try("setup line with a newline", "setup",
                  profile={"setup": ["module load x", "echo ok\nTOUCH"]}),
        sweep_try("launch line with a newline", "launch", profile={"launch": "srun\nTOUCH"}),
        sweep_try("machine ../../etc/x", "machine", spec={"machine": "../../etc/x"}),
        sweep_try("profile name ../evil", "name", profile={"name": "../evil"}),
        sweep_try("spec name ../escape", "name", spec={"name": "../escape"}),
        sweep_try("seeds: []", "seeds", spec={"seeds": []}),
        sweep_try("global_batch_sizes: []", "global_batch_sizes",
                  spec={"global_batch_sizes": []}),
        sweep_try("walltime 25:99", "walltime", spec={"walltime": "25:99"}),
        sweep_try("a config that does not exist", "missing.yaml",
                  spec={"configs": ["configs/missing.yaml"]}),
        sweep_try("an override of an unknown key", "train.bogus",
                  spec={"overrides": ["train.bogus=1"]}),
        sweep_try("a global batch of 33 on 2 ranks", "divisible",
                  spec={"global_batch_sizes": [33]}),
        sweep_try("Summit (account required) without an account", "account",
                  spec={"account": None}, scheduler="lsf"),
        sweep_try("--scheduler lsf on a Slurm profile", "lsf", extra=("--scheduler", "lsf")),
        bad_spec("name: [\n", name="a spec that is not YAML"),
        Try("sweep local: a point that fails is not counted a success", point_fails,
            ("points failed",)),
    ]


def render_control(ctx: Ctx) -> Case:
    jobs = ctx.work / "jobs"

    def check(o: Outcome) -> tuple[str, str] | None:
        scripts = sorted(jobs.glob("*.sbatch"))
        if len(scripts) != 10:
            return "silent wrong", f"{len(scripts)} scripts, expected 9 points and 1 cluster job"
        for script in scripts:
            if "#SBATCH --time=" not in script.read_text():
                return "silent wrong", f"{script.name} has no #SBATCH --time"
        return None
    return Case(["sweep", "render", "configs/sweeps/digits-local.yaml", "--scheduler", "slurm",
                 "--out", str(jobs), "--runs", str(ctx.work / "runs")], cwd=REPO,
                out=[jobs, ctx.work / "runs"], check=check)

