"""What a fault try is (Outcome, Case, Try, Ctx), and how one is run and judged.

Every family module builds ``Try`` objects from these; ``run_try`` runs one in its own
directory, snapshots what it may and may not touch, and ``classify`` turns the outcome into
one of ``CATEGORIES`` with the line that shows why.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

#: the repository root, whose configs the sweep tries copy
REPO = Path(__file__).resolve().parents[2]

#: the tiny settings of tests/conftest.py: every stage runs in seconds on a 2-core CPU
TINY = ["data.image_size=16", "surrogate.pretrain_epochs=2", "cluster.n_init=2",
        "train.epochs=2", "train.generator_width=4", "train.generator_blocks=1",
        "victim.epochs=2", "victim.seeds=1", "victim.baselines=[]", "victim.defenses=[]"]
CATEGORIES = ("clear error", "traceback", "silent wrong", "data lost", "security", "ok",
              "unclear", "failed control", "broken try")
#: what a stage reads or writes in a run directory: a failed command must leave it as it was
RESULTS = ("results.json", "perturbations.pt", "clusters.pt", "surrogate.pt", "config.yaml",
           "preview.png", "victim_curves.png", "stages", "unlearnable", "data")
SHARD = "train-00000-of-00002.h5"  # the first training shard of the 8-px digits set
RUN_SHARD = "train-00000-of-00004.h5"  # ... and of the finished run's data and unlearnable set


def sets(*items: str) -> list[str]:
    return [arg for item in items for arg in ("--set", item)]


# -- what a try is -----------------------------------------------------------------------------

@dataclass
class Outcome:
    rc: int | None                # None: timed out
    stdout: str = ""
    stderr: str = ""
    expect_more: list[str] = field(default_factory=list)  # substrings known only when run
    problem: tuple[str, str] | None = None  # (category, why), found by a try's own check
    note: str = ""


@dataclass
class Case:
    """One fabricated input and the command to run on it."""

    args: list[str]
    out: list[Path] = field(default_factory=list)      # where the command may write
    protect: list[Path] = field(default_factory=list)  # results a failure must leave as they were
    guard: list[Path] = field(default_factory=list)    # outside files a crafted input aims at
    markers: list[Path] = field(default_factory=list)  # appear only if a crafted input's code ran
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    timeout: float = 240
    stop: str | None = None       # the signal a kill try sends: "hpcue: stopped by" expected
    one_line: bool = True         # False: other commands' errors may come first (sweep local)
    runner: Callable[[Case], Outcome] | None = None
    check: Callable[[Outcome], tuple[str, str] | None] | None = None
    cleanup: Callable[[], None] | None = None


@dataclass
class Try:
    name: str
    setup: Callable[[Ctx], Case]
    expect: tuple[str, ...] | None  # substrings the error must hold; None: success is right
    needs: tuple[str, ...] = ()     # "run" (the finished tiny run), "digits" (8-px shards)
    root_only: bool = False


@dataclass
class Ctx:
    work: Path  # this try's own directory
    base: Path  # the finished run and the prepared digits, shared by every try

    @property
    def finished(self) -> Path:
        return self.base / "run"

    @property
    def digits(self) -> Path:
        return self.base / "digits8"

    @property
    def cwd(self) -> Path:
        path = self.work / "cwd"
        path.mkdir(exist_ok=True)
        return path

    def run_copy(self, dst: Path | None = None, slim: bool = False) -> Path:
        """A copy of the finished run (slim: without epoch checkpoints and logs)."""
        dst = dst or self.work / "run"
        skip = [".hpcue.lock"] + (["checkpoints", "logs"] if slim else [])
        shutil.copytree(self.finished, dst, ignore=shutil.ignore_patterns(*skip))
        return dst

    def digits_copy(self, name: str = "d") -> Path:
        dst = self.work / name
        shutil.copytree(self.digits, dst)
        return dst


# -- running and judging -------------------------------------------------------------------------

def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "hpcue.cli", *args]


def environment(case: Case) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("HPCUE_DEBUG", "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD")}
    return {**env, "OMP_NUM_THREADS": "1", **case.env}


def run_cli(case: Case, args: list[str] | None = None) -> Outcome:
    try:
        proc = subprocess.run(cli(*(case.args if args is None else args)), cwd=case.cwd,
                              env=environment(case), capture_output=True, text=True,
                              timeout=case.timeout)
    except subprocess.TimeoutExpired as exc:
        return Outcome(None, as_text(exc.stdout), as_text(exc.stderr))
    return Outcome(proc.returncode, proc.stdout, proc.stderr)


def as_text(data: bytes | str | None) -> str:
    if isinstance(data, bytes):
        return data.decode(errors="replace")
    return data or ""


def _digest(path: Path) -> str:
    if path.is_symlink():
        return f"link:{os.readlink(path)}"
    if path.is_dir():
        return "dir"
    return hashlib.sha256(path.read_bytes()).hexdigest()


def snapshot(root: Path, skip: list[Path]) -> dict[str, str]:
    """Every file and folder under ``root`` but those in ``skip``, with its content's hash."""
    out: dict[str, str] = {}
    if not root.exists():
        return out
    stack = [root]
    while stack:
        folder = stack.pop()
        for path in folder.iterdir():
            if any(path == s for s in skip):
                continue
            out[str(path)] = _digest(path)
            if path.is_dir() and not path.is_symlink():
                stack.append(path)
    return out


def snapshot_paths(paths: list[Path]) -> dict[str, str]:
    out: dict[str, str] = {}
    for path in paths:
        if path.is_dir() and not path.is_symlink():
            out.update(snapshot(path, []))
        out[str(path)] = _digest(path) if path.exists() or path.is_symlink() else "absent"
    return out


def leftovers(root: Path, stop: bool) -> list[str]:
    """Temporaries a finished command must not leave: atomic-write temporaries, a partial
    unlearnable set, and (unless it was stopped, which keeps them to resume) set-aside files."""
    found = []
    for path in root.rglob("*"):
        name = path.name
        if ((name.startswith(".") and name.endswith(".tmp")) or name.endswith(".partial")
                or (name == ".replaced" and not stop)):
            found.append(str(path))
    return found


def first_line(o: Outcome) -> str:
    """The line to report: hpcue's own, else the exception of a traceback, else the last."""
    lines = [line for line in o.stderr.splitlines() if line.strip()]
    ours = [i for i, line in enumerate(lines) if line.startswith("hpcue:")]
    if ours:  # a config error lists its keys on the indented lines after it: show the first
        i = ours[0]
        more = lines[i + 1] if i + 1 < len(lines) and lines[i + 1].startswith("  ") else ""
        return f"{lines[i]} {more.strip()}" if lines[i].endswith(":") and more else lines[i]
    if "Traceback" in o.stderr:
        exc = [line for line in lines if re.match(r"^[\w.]+(Error|Exception|Interrupt)\b", line)]
        return (exc or lines)[-1]
    if lines:
        return lines[-1]
    out = [line for line in o.stdout.splitlines() if line.strip()]
    return out[-1] if out else ""


def _changed(before: dict[str, str], after: dict[str, str]) -> tuple[list[str], list[str]]:
    """(new paths, changed or removed paths)."""
    new = sorted(set(after) - set(before))
    gone = sorted(p for p in before if after.get(p) != before[p])
    return new, gone


def classify(t: Try, case: Case, o: Outcome, outside: tuple[list[str], list[str]],
             lost: list[str], guarded: list[str], left: list[str]) -> tuple[str, str]:
    """The category of an outcome, and the line that shows why (a try's note appended)."""
    category, text = _category(t, case, o, outside, lost, guarded, left)
    return category, text + (f" [{o.note}]" if o.note and o.note not in text else "")


def _category(t: Try, case: Case, o: Outcome, outside: tuple[list[str], list[str]],
              lost: list[str], guarded: list[str], left: list[str]) -> tuple[str, str]:
    line = first_line(o)
    if o.rc == 0:  # a success says what it did on stdout
        said = [ln for ln in o.stdout.splitlines() if ln.startswith("[hpcue]")]
        line = said[-1] if said else line
    new_outside, changed_outside = outside
    fired = [str(m) for m in case.markers if m.exists()]
    if fired:
        return "security", f"{fired[0]} appeared: the crafted input's code ran; {line}"
    if guarded:
        return "security", f"{guarded[0]} (outside the output) was written; {line}"
    if new_outside:
        return "security", f"wrote {new_outside[0]} outside its output directory; {line}"
    if (lost or changed_outside) and o.rc != 0:  # a success may replace its own results
        return "data lost", f"{(lost or changed_outside)[0]} removed or changed; {line}"
    if o.rc is None:
        return "unclear", f"no answer within {case.timeout:.0f} s (hung?); {line}"
    if o.rc < 0 or o.rc == 139 or "Traceback" in o.stderr:
        return "traceback", f"exit {o.rc}: {line}"
    if o.problem is not None:
        return o.problem[0], f"{o.problem[1]}; {line}" if line else o.problem[1]
    if t.expect is None:
        if o.rc != 0:
            return "failed control", f"exit {o.rc}: {line}"
        if left:
            return "unclear", f"succeeded but left {left[0]}"
        return "ok", (line if line.startswith("[hpcue]") else o.note or line) or "exit 0"
    if o.rc == 0:
        return "silent wrong", f"exit 0 where an error was expected: {line}"
    prefix = "hpcue: stopped by" if case.stop else "hpcue: error:"
    ours = [ln for ln in o.stderr.splitlines() if ln.startswith(prefix)]
    if len(ours) != 1 and (case.one_line or not ours):
        return "unclear", f"exit {o.rc}, {len(ours)} '{prefix}' lines: {line}"
    if case.stop and o.rc != 128 + signal.Signals[case.stop].value:
        return "unclear", f"exit {o.rc}, not 128 + {case.stop}: {line}"
    tail = o.stderr[o.stderr.index(ours[0]):]
    missing = [s for s in (*t.expect, *o.expect_more) if s not in tail]
    if missing:
        return "unclear", f"does not name {missing[0]!r}: {line}"
    if left:
        return "unclear", f"left {left[0]}: {line}"
    return "clear error", line


def run_try(t: Try, ctx: Ctx) -> tuple[str, str]:
    ctx.work.mkdir(parents=True)
    case: Case | None = None
    try:
        case = t.setup(ctx)
        case.cwd = case.cwd or ctx.cwd
        before = snapshot(ctx.work, case.out)
        planted = set(leftovers(ctx.work, stop=False))  # the try's own input, not left by hpcue
        protected = snapshot_paths(case.protect)
        guards = {str(p): _digest(p) if p.exists() else "absent" for p in case.guard}
        o = (case.runner or run_cli)(case)
        if case.check is not None and o.rc is not None and o.problem is None:
            o.problem = case.check(o)
        outside = _changed(before, snapshot(ctx.work, case.out))
        lost = _changed(protected, snapshot_paths(case.protect))[1]
        guarded = [p for p, d in guards.items()
                   if (_digest(Path(p)) if Path(p).exists() else "absent") != d]
        left = [p for p in leftovers(ctx.work, stop=case.stop is not None) if p not in planted]
        return classify(t, case, o, outside, lost, guarded, left)
    except Exception as exc:  # the campaign's own failure to fabricate: report, go on
        return "broken try", f"{type(exc).__name__}: {exc}"
    finally:
        if case is not None and case.cleanup is not None:
            case.cleanup()
