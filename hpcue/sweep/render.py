"""Job scripts from the templates in ``jobs/``: one per sweep point, never hand-edited."""

from __future__ import annotations

import shlex
from pathlib import Path
from string import Template

from hpcue.errors import ConfigError
from hpcue.io import atomic_write_text
from hpcue.sweep.spec import Point, Sweep, parse_walltime

JOBS_DIR = Path(__file__).resolve().parents[2] / "jobs"
TEMPLATES = {"slurm": "slurm.sbatch", "lsf": "lsf.bsub"}


def sweep_dir(sweep: Sweep, runs: Path = Path("runs")) -> Path:
    return runs / sweep.spec.name


def point_dir(sweep: Sweep, point: Point, runs: Path = Path("runs")) -> Path:
    return sweep_dir(sweep, runs) / point.name


def run_command(sweep: Sweep, point: Point, runs: Path = Path("runs")) -> list[str]:
    args = ["hpcue", "run", "--config", str(point.config), "--out",
            str(point_dir(sweep, point, runs))]
    for item in point.overrides:
        args += ["--set", item]
    return args


def _walltime(minutes: int, scheduler: str) -> str:
    hours, mins = divmod(minutes, 60)
    return f"{hours:02d}:{mins:02d}" if scheduler == "lsf" else f"{hours:02d}:{mins:02d}:00"


def render_point(sweep: Sweep, point: Point, scheduler: str, runs: Path = Path("runs")) -> str:
    m, s = sweep.machine, sweep.spec
    launch = m.launch.format(world_size=point.world_size, ranks_per_node=point.ranks_per_node,
                             nodes=point.nodes)
    directives = []
    if scheduler == "slurm":
        if m.gpus_per_node:
            directives.append(f"#SBATCH --gpus-per-node={point.ranks_per_node}")
        directives.append(f"#SBATCH --cpus-per-task={m.cpus_per_task}")
        if s.account:
            directives.append(f"#SBATCH --account={s.account}")
        if m.partition:
            directives.append(f"#SBATCH --partition={m.partition}")
    template = Template((JOBS_DIR / TEMPLATES[scheduler]).read_text())
    return template.substitute(
        sweep=s.name, point=point.name, job_name=f"{s.name}-{point.name}"[:64],
        nodes=point.nodes, ranks_per_node=point.ranks_per_node,
        directives="".join(d + "\n" for d in directives),
        walltime=_walltime(parse_walltime(s.walltime), scheduler),
        account=s.account or "", queue=m.queue or "batch",
        run_dir=point_dir(sweep, point, runs), setup="\n".join(m.setup),
        launch=launch, command=shlex.join(run_command(sweep, point, runs)),
    )


def render(sweep: Sweep, scheduler: str, out: Path, runs: Path = Path("runs")) -> list[Path]:
    """Write one script per point into ``out``; returns their paths.

    Each point's run directory is created too: the scripts send the scheduler's log there,
    and Slurm and LSF fail a job whose log directory does not exist.
    """
    if scheduler not in TEMPLATES:
        raise ConfigError(f"unknown scheduler {scheduler!r}: expected slurm or lsf")
    if scheduler != sweep.machine.scheduler:
        raise ConfigError(f"machine profile {sweep.machine.name!r} uses {sweep.machine.scheduler},"
                          f" not {scheduler}")
    suffix = ".sbatch" if scheduler == "slurm" else ".bsub"
    texts = {Path(out) / f"{p.name}{suffix}": render_point(sweep, p, scheduler, runs)
             for p in sweep.points}
    for path, text in texts.items():
        atomic_write_text(path, text)
    for p in sweep.points:
        point_dir(sweep, p, runs).mkdir(parents=True, exist_ok=True)
    return list(texts)
