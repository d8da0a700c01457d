"""Job scripts from the shipped templates (``jobs/``): one per sweep point, never hand-edited.

A job script is shell, and its ``#SBATCH``/``#BSUB`` block ends at the first line that is not a
directive: a value pasted in with a newline would run a command of its own and silently drop
every directive after it. So each value is checked right before it is rendered (``FIELDS``
says how, per template field), though a loaded spec and profile were checked already.
"""

from __future__ import annotations

import dataclasses
import re
import shlex
from collections.abc import Callable
from pathlib import Path
from string import Template

from hpcue.config import plain_name
from hpcue.errors import ConfigError, InputError
from hpcue.io import atomic_write_text
from hpcue.stages.rundir import RunDir
from hpcue.stages.slices import slice_digest
from hpcue.sweep.machines import one_line, scheduler_word, scheduler_words
from hpcue.sweep.points import Point, Sweep
from hpcue.sweep.shipped import jobs_dir
from hpcue.sweep.spec import placeholder_account

TEMPLATES = {"slurm": "slurm.sbatch", "lsf": "lsf.bsub"}

#: every ${field} of the templates and what keeps it from adding a line or a word to the script
#: (a test holds the templates to these keys: a new field must say how it is safe)
FIELDS = {
    "sweep": "plain_name", "point": "plain_name", "job_name": "two plain names",
    "nodes": "an int", "ranks_per_node": "an int", "cpus_per_task": "an int",
    "walltime": "made from int minutes",
    "directives": "ints, and scheduler_word(s) for the account, partition and mem_per_node",
    "account": "scheduler_word", "queue": "scheduler_word",
    "run_dir": "directive_path: the --runs directory and two plain names",
    "setup": "one_line each: the trusted profile's own shell code",
    "launch": "one_line: the trusted profile's own shell code, formatted with ints",
    "command": "shlex.join: every word quoted (the profile's precision and micro batch too)",
}
#: a path a directive can take (#SBATCH --output, #BSUB -o): no blank, quote, '%' (Slurm's
#: and LSF's own placeholders) or shell character
DIRECTIVE_PATH = re.compile(r"[A-Za-z0-9_.+,=@:/][A-Za-z0-9_.+,=@:/-]*")


def sweep_dir(sweep: Sweep, runs: Path = Path("runs")) -> Path:
    return runs / sweep.spec.name


def point_dir(sweep: Sweep, point: Point, runs: Path = Path("runs")) -> Path:
    return sweep_dir(sweep, runs) / point.name


def shared_clusters(sweep: Sweep, runs: Path = Path("runs")) -> Path:
    """Where the sweep's points share clusters: one subdirectory per cluster config."""
    return sweep_dir(sweep, runs) / "clusters"


def cluster_digest(point: Point) -> str:
    return slice_digest(point.run_config, "cluster")


def cluster_jobs(sweep: Sweep) -> dict[str, Point]:
    """One job per distinct cluster config (its first point's settings) that the points need
    before they start; none when the spec does not share clusters."""
    if not sweep.spec.share_clusters:
        return {}
    jobs: dict[str, Point] = {}
    for p in sweep.points:
        jobs.setdefault(cluster_digest(p), p)
    return jobs


def cluster_job_dir(sweep: Sweep, digest: str, runs: Path = Path("runs")) -> Path:
    return sweep_dir(sweep, runs) / "cluster-jobs" / digest


def clusters_ready(sweep: Sweep, digest: str, runs: Path = Path("runs")) -> bool:
    return RunDir(shared_clusters(sweep, runs) / digest).stage_record("cluster").is_file()


def run_command(sweep: Sweep, point: Point, runs: Path = Path("runs"), stage: str = "run",
                out: Path | None = None) -> list[str]:
    out = point_dir(sweep, point, runs) if out is None else out
    args = ["hpcue", stage, "--config", str(point.config), "--out", str(out)]
    for item in point.overrides:
        args += ["--set", item]
    if sweep.spec.share_clusters:
        args += ["--set", f"cluster.shared={shared_clusters(sweep, runs)}"]
    return args


def _walltime(minutes: int, scheduler: str) -> str:
    hours, mins = divmod(minutes, 60)
    return f"{hours:02d}:{mins:02d}" if scheduler == "lsf" else f"{hours:02d}:{mins:02d}:00"


def render_point(sweep: Sweep, point: Point, scheduler: str, runs: Path = Path("runs")) -> str:
    return _script(sweep, scheduler, point, point.name, point_dir(sweep, point, runs),
                   run_command(sweep, point, runs))


def cluster_job_point(sweep: Sweep, digest: str) -> Point:
    """The clusters job sized to its work: one rank on one node (one GPU where the machine has
    them), for the spec's cluster wall time. The cluster stage runs at any world size (each
    rank its share of the features, K-means' sums all-reduced), and one device does it in
    minutes: a point's nodes would sit idle, and wait longer in the queue."""
    point = cluster_jobs(sweep)[digest]
    return dataclasses.replace(point, nodes=1, ranks_per_node=1,
                               walltime_minutes=sweep.spec.cluster_walltime_minutes(
                                   point.walltime_minutes))


def render_cluster_job(sweep: Sweep, digest: str, scheduler: str,
                       runs: Path = Path("runs")) -> str:
    """``hpcue cluster`` for one cluster config, publishing into the shared directory."""
    point, out = cluster_job_point(sweep, digest), cluster_job_dir(sweep, digest, runs)
    return _script(sweep, scheduler, point, f"clusters-{digest}", out,
                   run_command(sweep, point, runs, stage="cluster", out=out))


def directive_path(value: str) -> str:
    """``value`` if a #SBATCH/#BSUB line can take it as a path (``DIRECTIVE_PATH``)."""
    if not DIRECTIVE_PATH.fullmatch(value):
        raise ValueError(f"{value!r} cannot go into a #SBATCH/#BSUB line: letters, digits, "
                         f"/ _ . + , = @ : - only, not starting with -")
    return value


def _check(where: str, key: str, value: str, check: Callable[[str], str],
           error: type[Exception] = ConfigError) -> None:
    try:
        check(value)
    except ValueError as exc:
        raise error(f"{where}: {key}: {exc}") from None


def check_account(sweep: Sweep) -> None:
    """Refuse a placeholder account (``spec.PLACEHOLDER_ACCOUNTS``): it passes every check of
    form, and the scheduler then refuses every job, or charges a stranger's project."""
    account = sweep.spec.account
    if placeholder_account(account):
        raise ConfigError(f"{sweep.source}: account: {account!r} is a placeholder, not a "
                          f"project: set account: in the spec (a copy of it) to the project "
                          f"your jobs are charged to, or pass --account PROJECT")


def check_values(sweep: Sweep, label: str, run_dir: Path) -> None:
    """Refuse a value that would reach ``label``'s job script unchecked (a Sweep built in code,
    or a spec changed after loading, skips the checks that loading does)."""
    m, s = sweep.machine, sweep.spec
    spec, profile = str(sweep.source), f"machine profile {m.name!r}"
    _check(spec, "name", s.name, plain_name)
    _check(spec, "point", label, plain_name)
    if s.account is not None:
        _check(spec, "account", s.account, scheduler_word)
        check_account(sweep)
    if m.partition is not None:
        _check(profile, "partition", m.partition, scheduler_words)
    if m.queue is not None:
        _check(profile, "queue", m.queue, scheduler_word)
    if m.mem_per_node is not None:
        _check(profile, "mem_per_node", m.mem_per_node, scheduler_word)
    _check(profile, "launch", m.launch, one_line)
    if type(m.cpus_per_task) is not int or m.cpus_per_task < 1:  # rendered as a number
        raise ConfigError(f"{profile}: cpus_per_task: {m.cpus_per_task!r} is not a positive int")
    for line in m.setup:
        _check(profile, "setup", line, one_line)
    _check("--runs", "job directory", str(run_dir), directive_path, InputError)


def _script(sweep: Sweep, scheduler: str, point: Point, label: str, run_dir: Path,
            command: list[str]) -> str:
    check_values(sweep, label, run_dir)
    m, s = sweep.machine, sweep.spec
    launch = m.launch.format(world_size=point.world_size, ranks_per_node=point.ranks_per_node,
                             nodes=point.nodes, cpus_per_task=m.cpus_per_task)
    directives = []
    if scheduler == "slurm":
        if m.gpus_per_node:
            directives.append(f"#SBATCH --gpus-per-node={point.ranks_per_node}")
        directives.append(f"#SBATCH --cpus-per-task={m.cpus_per_task}")
        if s.account:
            directives.append(f"#SBATCH --account={s.account}")
        if m.partition:
            directives.append(f"#SBATCH --partition={m.partition}")
        if m.mem_per_node is not None:
            directives.append(f"#SBATCH --mem={m.mem_per_node}")
    template = Template((jobs_dir() / TEMPLATES[scheduler]).read_text())
    return template.substitute(
        sweep=s.name, point=label, job_name=f"{s.name}-{label}"[:64],
        nodes=point.nodes, ranks_per_node=point.ranks_per_node, cpus_per_task=m.cpus_per_task,
        directives="".join(d + "\n" for d in directives),
        walltime=_walltime(point.walltime_minutes, scheduler),
        account=s.account or "", queue=m.queue or "batch",
        run_dir=run_dir, setup="\n".join(m.setup), launch=launch, command=shlex.join(command),
    )


def script_name(name: str, scheduler: str) -> str:
    return f"{name}{'.sbatch' if scheduler == 'slurm' else '.bsub'}"


def render(sweep: Sweep, scheduler: str | None, out: Path,
           runs: Path = Path("runs")) -> list[Path]:
    """Write one script per point, then one per shared cluster config, into ``out``; returns
    their paths in that order. ``scheduler``: the machine profile's (None), or the same
    named, to be sure of it.

    Nothing else is written: ``hpcue sweep render`` is a preview. The scripts send the
    scheduler's log into each job's run directory, which Slurm and LSF need to exist before
    the job starts: ``submit`` creates it for each job it submits.
    """
    scheduler = sweep.machine.scheduler if scheduler is None else scheduler
    if scheduler not in TEMPLATES:
        raise ConfigError(f"unknown scheduler {scheduler!r}: expected slurm or lsf")
    if scheduler != sweep.machine.scheduler:
        raise ConfigError(f"machine profile {sweep.machine.name!r} uses {sweep.machine.scheduler},"
                          f" not {scheduler}: leave out --scheduler, or choose a profile for "
                          f"{scheduler}")
    texts = {Path(out) / script_name(p.name, scheduler): render_point(sweep, p, scheduler, runs)
             for p in sweep.points}
    for digest in cluster_jobs(sweep):
        texts[Path(out) / script_name(f"clusters-{digest}", scheduler)] = render_cluster_job(
            sweep, digest, scheduler, runs)
    for path, text in texts.items():
        atomic_write_text(path, text)
    return list(texts)
