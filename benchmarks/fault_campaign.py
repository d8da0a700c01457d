"""A reproducible fault and bad-input campaign against the hpcue command line.

Every try is one real CLI command (``python -m hpcue.cli ...`` in a subprocess, one thread, a
timeout) on inputs fabricated in its own temporary directory: damaged, crafted or malformed
configs, shard directories, raw data sets, run directories, sweep specs, machine profiles and
results, plus kills, a held lock and a full disk. Each outcome is classified as

    clear error    non-zero exit, exactly one ``hpcue: error:`` line (a config error may go on
                   in indented lines), no traceback, the message names what the try expects
                   (the file, key or option at fault), nothing written outside the command's
                   own output and no temporary left behind
    traceback      a Python traceback, or a crash (a negative return code, 139)
    silent wrong   exit 0 where an error was expected, a result holding NaN or Infinity, a
                   failed point counted as a success
    data lost      a result that existed before the command (results.json, perturbations.pt,
                   unlearnable/, a shard ...) removed or changed by a failed command
    security       a file written outside the command's output directory, or the command of a
                   crafted input executed (marker files)
    ok             a control: a command whose success is the right outcome, and it succeeded

and, only when they occur, ``unclear`` (an error that is not one line, or does not name what is
at fault, or leaves a temporary behind, or a hang), ``failed control`` (a control that failed)
and ``broken try`` (the campaign could not fabricate the try's input: a bug of this script).

One finished tiny run is made first and copied for every try that needs one. The output is one
line per try, a table of counts and, as the last line,
``tries N clear X traceback T silent S lost L security Y ok K``. The exit status is 0 whatever
was found: this reports, it does not judge.

    .venv/bin/python benchmarks/fault_campaign.py [--quick] [--only TEXT] [--keep] [--list]

``--quick`` skips the tries that need the finished run (and the run itself); the full-disk tries
need root (a tmpfs is mounted) and are skipped otherwise.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import pickle
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the damage helpers the tests use: one copy, in tests/fabricate.py
from tests.fabricate import edit_meta, fill_disk, fix_sha, rewrite_shard  # noqa: E402

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
        return Outcome(None, _text(exc.stdout), _text(exc.stderr))
    return Outcome(proc.returncode, proc.stdout, proc.stderr)


def _text(data: bytes | str | None) -> str:
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


# -- fabrication helpers -------------------------------------------------------------------------

class RunsCode:
    """Unpickling this runs ``touch marker``: what a crafted checkpoint or artifact would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def write_pickle(path: Path, obj: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        pickle.dump(obj, fh)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])


def random_bytes(path: Path, n: int = 4096) -> None:
    path.write_bytes(np.random.default_rng(7).integers(0, 256, n, dtype=np.uint8).tobytes())


def flip_image_byte(path: Path) -> None:
    """Damage pixel data only: the shard still opens, with the right shape and ids."""
    with h5py.File(path, "r") as f:
        offset = f["images"].id.get_chunk_info(0).byte_offset
    data = bytearray(path.read_bytes())
    data[offset + 5] ^= 0xFF
    path.write_bytes(bytes(data))


def jpeg(path: Path, seed: int, size: tuple[int, int] = (24, 24)) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, quality=90)


def image_folder(root: Path, classes: tuple[str, ...] = ("cat", "dog"),
                 per_class: int = 5) -> Path:
    for c, name in enumerate(classes):
        for i in range(per_class):
            jpeg(root / name / f"{i}.jpg", seed=100 * c + i)
    return root


def png_header(path: Path, width: int, height: int) -> None:
    """A tiny PNG that declares width x height pixels (a decompression bomb's header)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
                     + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b""))


def medmnist_npz(root: Path, labels: Callable[[int], np.ndarray] | None = None,
                 drop: str | None = None, empty: str | None = None) -> Path:
    """bloodmnist.npz (8 classes, 28 px) with 12 images a split."""
    rng = np.random.default_rng(0)
    arrays = {}
    for split in ("train", "val", "test"):
        n = 0 if split == empty else 12
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, 28, 28, 3), dtype=np.uint8)
        arrays[f"{split}_labels"] = (labels(n) if labels else (np.arange(n) % 8)[:, None]
                                     .astype(np.uint8))
    arrays.pop(drop, None)
    root.mkdir(parents=True, exist_ok=True)
    np.savez(root / "bloodmnist.npz", **arrays)
    return root


def write_yaml(path: Path, data: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data))
    return path


def read_finite_json(path: Path) -> dict:
    """A JSON file that must hold no NaN or Infinity (ValueError if it does)."""
    def refuse(name: str) -> None:
        raise ValueError(f"{path} holds {name}")
    return json.loads(path.read_text(), parse_constant=refuse)


def results_problem(run: Path) -> tuple[str, str] | None:
    """Why a run's results.json is not a sane result (None: it is)."""
    path = run / "results.json"
    if not path.is_file():
        return "silent wrong", f"{path} missing after exit 0"
    try:
        results = read_finite_json(path)
    except ValueError as exc:
        return "silent wrong", str(exc)
    for key in ("clean_test_acc", "unlearnable_test_acc", "cluster_purity"):
        value = results.get(key)
        if not isinstance(value, float | int) or not 0 <= value <= 1:
            return "silent wrong", f"{path}: {key} is {value!r}"
    return None


def protect_run(run: Path) -> list[Path]:
    return [run / name for name in RESULTS]


def hold_lock(path: Path) -> Callable[[], None]:
    """Hold ``path``'s advisory lock as an hpcue command does, naming this process."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"hpcue on {socket.gethostname()}, pid {os.getpid()}\n".encode(), 0)
    return lambda: os.close(fd)


def mount_tmpfs(path: Path, size: str) -> Callable[[], None]:
    path.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                   check=True, capture_output=True)
    return lambda: subprocess.run(["umount", str(path)], capture_output=True)





# -- configs -------------------------------------------------------------------------------------

def config_try(name: str, overrides: list[str], *expect: str, out: bool = True,
               config: Callable[[Ctx], Path] | None = None, tiny: bool = False) -> Try:
    """``hpcue run`` with a bad --set (or --config); without --out the config's own name
    decides the run directory, so a name that escapes shows there."""
    def setup(ctx: Ctx) -> Case:
        args = ["run"]
        if config is not None:
            args += ["--config", str(config(ctx))]
        if out:
            args += ["--out", str(ctx.work / "out")]
        args += sets(*(TINY if tiny else []), *overrides)
        return Case(args, out=[ctx.work / "out"] if out else [],
                    guard=[ctx.work / "abs-escape"])
    return Try(f"config: {name}", setup, expect)


def config_file(text: str) -> Callable[[Ctx], Path]:
    def make(ctx: Ctx) -> Path:
        path = ctx.work / "cfg.yaml"
        path.write_text(text.replace("{work}", str(ctx.work)))
        return path
    return make


def config_tries() -> list[Try]:
    no_set = Try("config: --set without '=' (train.epochs)", lambda ctx: Case(
        ["run", "--out", str(ctx.work / "out"), "--set", "train.epochs"],
        out=[ctx.work / "out"]), ("train.epochs",))
    return [
        config_try("NaN and Infinity in four keys at once", [
            "train.lr=.nan", "train.epsilon=.nan", "victim.lr=.inf", "cluster.tol=.nan"],
            "train.lr", "train.epsilon", "victim.lr", "cluster.tol"),
        config_try("train.lr=.inf", ["train.lr=.inf"], "train.lr"),
        config_try("train.epsilon=.nan", ["train.epsilon=.nan"], "train.epsilon"),
        config_try("runtime.timeout_s=.inf, train.warmup_epochs=.nan, data.test_fraction=.nan",
                   ["runtime.timeout_s=.inf", "train.warmup_epochs=.nan",
                    "data.test_fraction=.nan"],
                   "runtime.timeout_s", "train.warmup_epochs", "data.test_fraction"),
        config_try("train.epsilon=2 (beyond the pixel scale)", ["train.epsilon=2"],
                   "train.epsilon"),
        config_try("data.image_size=30", ["data.image_size=30"], "data.image_size"),
        config_try("seed=-1, cluster.seed=2**32", ["seed=-1", "cluster.seed=4294967296"],
                   "seed", "cluster.seed"),
        config_try("train.epochs=0, victim.seeds=0, train.global_batch_size=0",
                   ["train.epochs=0", "victim.seeds=0", "train.global_batch_size=0"],
                   "train.epochs", "victim.seeds", "train.global_batch_size"),
        config_try("unknown key train.epoch=3", ["train.epoch=3"], "train.epoch"),
        no_set,
        config_try("data.dataset=nope", ["data.dataset=nope"], "nope"),
        config_try("train.lr_scaling=linear without a base batch", ["train.lr_scaling=linear"],
                   "base_batch_size"),
        config_try("victim.baselines=[bogus], victim.defenses=[blur]",
                   ["victim.baselines=[bogus]", "victim.defenses=[blur]"],
                   "victim.baselines", "victim.defenses"),
        config_try("--set name=../.. without --out", ["name=../.."], "name", out=False),
        Try("config: --set name=<absolute path> without --out", lambda ctx: Case(
            ["run", "--set", f"name={ctx.work / 'abs-escape'}"],
            guard=[ctx.work / "abs-escape"]), ("name",)),
        config_try("config file with name: ../.. without --out", [], "name", out=False,
                   config=config_file("name: ../..\n")),
        config_try("config file with name: /abs without --out", [], "name", out=False,
                   config=config_file("name: {work}/abs-escape\n")),
        config_try("config file that is not YAML", [], "cfg.yaml",
                   config=config_file("train: {epochs: 3\n")),
        config_try("config file that is a YAML list", [], "cfg.yaml",
                   config=config_file("- 1\n- 2\n")),
        config_try("config whose base chain loops", [], "loops",
                   config=config_file("base: cfg.yaml\n")),
        config_try("config whose base is /etc/passwd", [], "passwd",
                   config=config_file("base: /etc/passwd\n")),
        Try("config: --config that does not exist", lambda ctx: Case(
            ["run", "--config", str(ctx.work / "missing.yaml"), "--out", str(ctx.work / "out")],
            out=[ctx.work / "out"]), ("missing.yaml",)),
        config_try("train.global_batch_size=4096, beyond the training set",
                   ["train.global_batch_size=4096"], "train.global_batch_size", tiny=True),
        config_try("data.dataset=imagefolder without data.root", ["data.dataset=imagefolder"],
                   "data.root", tiny=True),
        Try("config: data.shards names a missing directory", lambda ctx: Case(
            ["run", "--out", str(ctx.work / "out"),
             *sets(*TINY, f"data.shards={ctx.work / 'no-shards'}")],
            out=[ctx.work / "out"]), ("no-shards",)),
    ]


# -- diverging trainings -------------------------------------------------------------------------

def on_copy(name: str, args: list[str], *expect: str,
            damage: Callable[[Path, Ctx], object] | None = None,
            env: dict[str, str] | None = None, marker: bool = False,
            protect: Callable[[Path], list[Path]] = protect_run) -> Try:
    """A stage command on a copy of the finished run, damaged first: one error, and every
    result of the copy as it was."""
    def setup(ctx: Ctx) -> Case:
        run = ctx.run_copy()
        if damage is not None:
            damage(run, ctx)
        # a stage command replaces the copy's finished results only when told to
        force = ["--force"] if args[0] != "run" else []
        return Case([args[0], "--out", str(run), *force, *args[1:]], out=[run],
                    protect=protect(run),
                    markers=[ctx.work / "code-ran"] if marker else [],
                    guard=[ctx.work / "victim.h5"], env=env or {})
    return Try(name, setup, expect, needs=("run",))


def ok_on_copy(name: str, args: list[str], damage: Callable[[Path, Ctx], object]) -> Try:
    """A stage command on a damaged copy whose success is right (the damage is never read);
    a crafted file's marker must still not appear."""
    t = on_copy(name, args, damage=damage, marker=True)
    t.expect = None
    return t


def divergence_tries() -> list[Try]:
    return [
        on_copy("diverge: train.lr=1e30 (hpcue train on a finished run)",
                ["train", *sets("train.lr=1e30")], "loss became", "lr"),
        on_copy("diverge: victim.lr=1e30 (hpcue evaluate on a finished run)",
                ["evaluate", *sets("victim.lr=1e30")], "loss became", "lr"),
        Try("diverge: train.lr=1e30 in a fresh hpcue run", lambda ctx: Case(
            ["run", "--out", str(ctx.work / "run"), *sets(*TINY, "train.lr=1e30")],
            out=[ctx.work / "run"]), ("loss became", "lr")),
    ]


# -- run directories and the files stages hand on ------------------------------------------------

def save_torch(path: Path, obj: object) -> None:
    import torch

    torch.save(obj, path)


def unfinished(stage: str, plant: str, what: Callable[[Ctx], object]) -> Callable:
    """A finished run wound back to before ``stage`` finished (its record, its outputs and the
    later stages' gone), with ``what`` planted as the stage's epoch checkpoint ``plant``."""
    later = {"cluster": ["cluster", "train", "generate", "evaluate"],
             "train": ["train", "generate", "evaluate"], "evaluate": ["evaluate"]}[stage]
    outputs = {"cluster": ["clusters.pt", "surrogate.pt", "checkpoints/surrogate"],
               "train": ["perturbations.pt", "checkpoints/train"],
               "generate": ["unlearnable", "preview.png"],
               "evaluate": ["results.json", "victim_curves.png", "checkpoints/victims"]}

    def damage(run: Path, ctx: Ctx) -> None:
        for name in later:
            (run / "stages" / f"{name}.json").unlink()
            for rel in outputs[name] + (outputs["generate"] if name == "train" else []):
                path = run / rel
                shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
        target = run / "checkpoints" / plant / "last.ckpt"
        content = what(ctx)
        if isinstance(content, bytes):
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
        else:
            write_pickle(target, content)
    return damage


def crafted(ctx: Ctx) -> dict:
    return {"state_dict": RunsCode(ctx.work / "code-ran")}


def run_dir_tries() -> list[Try]:
    def outside_victim(ctx: Ctx) -> Path:
        victim = ctx.work / "victim.h5"
        victim.write_text("the user's own file\n")
        return victim

    def meta_escape(absolute: bool) -> Callable[[Path, Ctx], None]:
        def damage(run: Path, ctx: Ctx) -> None:
            victim = outside_victim(ctx)
            name = str(victim) if absolute else "../../victim.h5"
            edit_meta(run / "data", lambda m: m["splits"]["train"]["shards"][0].update(file=name))
        return damage

    def nan_deltas(run: Path, ctx: Ctx) -> None:
        import torch

        state = torch.load(run / "perturbations.pt", weights_only=True)
        state["deltas"] = torch.full_like(state["deltas"], float("nan"))
        save_torch(run / "perturbations.pt", state)

    def big_deltas(run: Path, ctx: Ctx) -> None:
        import torch

        state = torch.load(run / "perturbations.pt", weights_only=True)
        state["deltas"] = torch.full_like(state["deltas"], 0.5)
        save_torch(run / "perturbations.pt", state)

    def other_clusters(run: Path, ctx: Ctx) -> None:
        import torch

        state = torch.load(run / "clusters.pt", weights_only=True)
        state["assignments"] = state["assignments"][:100]
        save_torch(run / "clusters.pt", state)

    def clusters_beyond_k(run: Path, ctx: Ctx) -> None:
        import torch

        state = torch.load(run / "clusters.pt", weights_only=True)
        state["assignments"] = torch.full_like(state["assignments"], 99)
        save_torch(run / "clusters.pt", state)

    def crafted_replaced(run: Path, ctx: Ctx) -> None:
        (run / ".replaced").mkdir()
        (run / ".replaced" / "0").write_text("overwritten through .replaced\n")
        (run / ".replaced" / "moved.json").write_text(json.dumps(["../victim.h5"]))
        outside_victim(ctx)

    def labels_beyond(run: Path, ctx: Ctx) -> None:
        with h5py.File(run / "data" / RUN_SHARD, "r") as f:
            n = len(f["labels"])
        rewrite_shard(run / "data", RUN_SHARD, labels=np.full(n, 12, np.int64))

    def escape_unlearnable(run: Path, ctx: Ctx) -> None:
        edit_meta(run / "unlearnable",
                  lambda m: m["splits"]["train"]["shards"][0].update(file="../results.json"))

    return [
        on_copy("run dir: train with surrogate.weights=/typo.pth",
                ["train", *sets("surrogate.weights=/typo.pth")], "/typo.pth"),
        on_copy("run dir: clusters.pt truncated (generate)", ["generate"], "clusters.pt",
                damage=lambda run, ctx: truncate(run / "clusters.pt")),
        on_copy("run dir: clusters.pt random bytes (train)", ["train"], "clusters.pt",
                damage=lambda run, ctx: random_bytes(run / "clusters.pt")),
        on_copy("run dir: perturbations.pt truncated (generate)", ["generate"],
                "perturbations.pt", damage=lambda run, ctx: truncate(run / "perturbations.pt")),
        on_copy("run dir: perturbations.pt holding NaN (generate)", ["generate"],
                "perturbations.pt", "NaN", damage=nan_deltas),
        on_copy("run dir: perturbations beyond epsilon (generate)", ["generate"],
                "perturbations.pt", "epsilon", damage=big_deltas),
        on_copy("run dir: crafted pickle as clusters.pt (generate)", ["generate"], "clusters.pt",
                marker=True, damage=lambda run, ctx: write_pickle(
                    run / "clusters.pt", RunsCode(ctx.work / "code-ran"))),
        on_copy("run dir: crafted perturbations.pt, TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1",
                ["generate"], "perturbations.pt", marker=True,
                env={"TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"},
                damage=lambda run, ctx: write_pickle(
                    run / "perturbations.pt", {"deltas": RunsCode(ctx.work / "code-ran")})),
        on_copy("run dir: clusters.pt of another data set size (generate)", ["generate"],
                "assignments", damage=other_clusters),
        on_copy("run dir: an unlearnable shard truncated (evaluate)", ["evaluate"],
                f"unlearnable/{RUN_SHARD}",
                damage=lambda run, ctx: truncate(run / "unlearnable" / RUN_SHARD)),
        on_copy("run dir: unlearnable/meta.json names ../results.json (evaluate)", ["evaluate"],
                "meta.json", damage=escape_unlearnable),
        on_copy("run dir: crafted last.ckpt in an unfinished train (pickle runs touch)",
                ["train"], "last.ckpt", marker=True,
                damage=unfinished("train", "train", crafted)),
        on_copy("run dir: same, with TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1", ["train"], "last.ckpt",
                marker=True, env={"TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"},
                damage=unfinished("train", "train", crafted)),
        # the surrogate's pretraining never resumes: the crafted file must simply go unread
        ok_on_copy("control: crafted surrogate last.ckpt in an unfinished cluster is never "
                   "loaded", ["cluster"], damage=unfinished("cluster", "surrogate", crafted)),
        on_copy("run dir: crafted victims last.ckpt in an unfinished evaluate", ["evaluate"],
                "last.ckpt", marker=True, damage=unfinished("evaluate", "victims", crafted)),
        on_copy("run dir: data/meta.json names ../../victim.h5 (generate)", ["generate"],
                "meta.json", damage=meta_escape(absolute=False)),
        on_copy("run dir: clean labels beyond the classes, checksum fixed (generate)",
                ["generate"], "labels", damage=labels_beyond),
        on_copy("run dir: config.yaml not YAML (generate)", ["generate"], "config.yaml",
                damage=lambda run, ctx: (run / "config.yaml").write_text("train: [1\n")),
        on_copy("run dir: results.json holding NaN (hpcue run, every stage done)",
                ["run", *sets(*TINY)], "results.json",
                damage=lambda run, ctx: (run / "results.json").write_text(
                    (run / "results.json").read_text().replace(
                        '"clean_test_acc": ', '"clean_test_acc": NaN, "was": ', 1))),
        on_copy("run dir: hpcue run with another config on a finished run",
                ["run", *sets(*TINY, "train.epochs=3")], "different config"),
        on_copy("run dir: generate with train.epsilon changed", ["generate",
                *sets("train.epsilon=0.01")], "stage train", "train.epsilon"),
        on_copy("run dir: crafted .replaced/moved.json naming ../victim.h5, then a failure",
                ["train", *sets("surrogate.weights=/typo.pth")], "/typo.pth",
                damage=crafted_replaced),
        Try("run dir: train --out a directory that does not exist", lambda ctx: Case(
            ["train", "--out", str(ctx.work / "nope")]), ("does not exist",)),
    ]


def _file(path: Path) -> Path:
    path.write_text("a user's file\n")
    return path


# -- kills and the run directory's lock ----------------------------------------------------------

def wait_for(proc: subprocess.Popen, path: Path, timeout: float) -> str | None:
    """None once ``path`` exists, else why it never did."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            return f"the command ended ({proc.returncode}) before {path.name} appeared"
        if time.monotonic() > deadline:
            return f"no {path} after {timeout:.0f} s"
        time.sleep(0.1)
    return None


def popen(case: Case, args: list[str]):
    out, err = tempfile.TemporaryFile(), tempfile.TemporaryFile()
    proc = subprocess.Popen(cli(*args), cwd=case.cwd, env=environment(case), stdout=out,
                            stderr=err)
    return proc, out, err


def collect(proc: subprocess.Popen, out, err, timeout: float) -> Outcome:
    try:
        rc: int | None = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        rc = None
    out.seek(0)
    err.seek(0)
    return Outcome(rc, _text(out.read()), _text(err.read()))


def kill_try(name: str, args: Callable[[Path], list[str]], wait: str, sig: str,
             fresh: bool = False) -> Try:
    """Start a stage, wait for its first epoch checkpoint ``wait``, send ``sig``: one line, exit
    128 + the signal, the checkpoint kept to resume from, nothing of the inputs lost."""
    def setup(ctx: Ctx) -> Case:
        run = ctx.work / "run" if fresh else ctx.run_copy(slim=True)
        case = Case(args(run), out=[run], stop=sig,
                    protect=[] if fresh else [run / n for n in ("data", "clusters.pt",
                                                                "surrogate.pt")])

        def runner(case: Case) -> Outcome:
            proc, out, err = popen(case, case.args)
            why = wait_for(proc, run / wait, 240)
            if why is None:
                proc.send_signal(signal.Signals[sig])
            o = collect(proc, out, err, 120)
            if why is not None:
                o.problem = ("unclear", why)
            elif not (run / wait).is_file():
                o.problem = ("data lost", f"{wait}, the point to resume from, is gone")
            return o
        case.runner = runner
        return case
    return Try(f"kill: {name}", setup, (sig, "resume"), needs=() if fresh else ("run",))


def prepare_1024_try() -> Try:
    """``data prepare digits --image-size 1024``: 5.6 GB of uint8 output, which the resize used
    to need about 22 GB of float work for. Whole, it takes minutes here, so it is stopped with
    SIGTERM after 25 s; the try reports the peak memory so far."""
    def setup(ctx: Ctx) -> Case:
        out = ctx.work / "d"
        case = Case(["data", "prepare", "digits", "--image-size", "1024", "--out", str(out)],
                    out=[out], stop="SIGTERM")

        def runner(case: Case) -> Outcome:
            proc, o_file, e_file = popen(case, case.args)
            peak, t0 = 0, time.monotonic()
            while time.monotonic() - t0 < 25 and proc.poll() is None:
                peak = max(peak, _peak_rss(proc.pid))
                time.sleep(0.2)
            ended = proc.poll() is not None
            if not ended:
                peak = max(peak, _peak_rss(proc.pid))
                proc.send_signal(signal.SIGTERM)
            o = collect(proc, o_file, e_file, 120)
            o.note = f"peak RSS {peak / 2**30:.2f} GiB in {time.monotonic() - t0:.0f} s"
            if ended and o.rc == 0:
                o.problem = ("ok", f"finished on its own; {o.note}")
            elif peak > 16 * 2**30:
                o.problem = ("unclear", f"memory not bounded: {o.note}")
            return o
        case.runner = runner
        return case
    return Try("kill: SIGTERM during data prepare digits --image-size 1024 (memory)", setup,
               ("SIGTERM",))


def _peak_rss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def kill_tries() -> list[Try]:
    return [
        kill_try("SIGTERM during stage-1 training",
                 lambda run: ["train", "--out", str(run), "--force", *sets("train.epochs=300")],
                 "checkpoints/train/last.ckpt", "SIGTERM"),
        kill_try("SIGINT during stage-1 training",
                 lambda run: ["train", "--out", str(run), "--force", *sets("train.epochs=300")],
                 "checkpoints/train/last.ckpt", "SIGINT"),
        kill_try("SIGTERM during the victims' training (evaluate)",
                 lambda run: ["evaluate", "--out", str(run), "--force", *sets("victim.epochs=300")],
                 "checkpoints/victims/last.ckpt", "SIGTERM"),
        kill_try("SIGTERM during surrogate pretraining (a fresh hpcue run)",
                 lambda run: ["run", "--out", str(run),
                              *sets(*TINY, "surrogate.pretrain_epochs=300")],
                 "checkpoints/surrogate/last.ckpt", "SIGTERM", fresh=True),
        prepare_1024_try(),
    ]


def lock_tries() -> list[Try]:
    def two_runs(ctx: Ctx) -> Case:
        run = ctx.work / "run"
        case = Case(["run", "--out", str(run), *sets(*TINY)], out=[run], timeout=300)

        def runner(case: Case) -> Outcome:
            first, out, err = popen(case, case.args)
            why = wait_for(first, run / "config.yaml", 240)
            second = run_cli(case)
            first_o = collect(first, out, err, 300)
            second.expect_more = [f"pid {first.pid}"]
            if why is not None:
                second.problem = ("unclear", why)
            elif first_o.rc != 0 or "Traceback" in first_o.stderr:
                second.problem = ("data lost", f"the first run failed ({first_o.rc}): "
                                               f"{first_line(first_o)}")
            else:
                second.problem = results_problem(run)
            return second
        case.runner = runner
        return case

    def held(ctx: Ctx) -> Case:
        run = ctx.run_copy()
        release = hold_lock(run / ".hpcue.lock")
        return Case(["evaluate", "--out", str(run)], out=[run], protect=protect_run(run),
                    cleanup=release)

    return [
        Try("lock: a second hpcue run while the first holds the directory", two_runs,
            ("in use by",)),
        Try("lock: hpcue evaluate on a directory another process holds", held,
            ("in use by", f"pid {os.getpid()}"), needs=("run",)),
    ]


# -- a full disk ---------------------------------------------------------------------------------

def full_disk_tries() -> list[Try]:
    def prepare_case(ctx: Ctx) -> Case:
        disk = ctx.work / "disk"
        case = Case(["data", "prepare", "digits", "--image-size", "32", "--shards", "2",
                     "--out", str(disk / "d")], out=[disk])
        case.cleanup = mount_tmpfs(disk, "2m")
        case.check = lambda o: (("unclear", f"left {sorted(p.name for p in disk.iterdir())}")
                                if any(disk.iterdir()) else None)
        return case

    def stage_case(stage: str, leave: int) -> Callable[[Ctx], Case]:
        def setup(ctx: Ctx) -> Case:
            disk = ctx.work / "disk"
            umount = mount_tmpfs(disk, "16m")
            try:
                run = ctx.run_copy(disk / "run", slim=True)
                fill_disk(disk, leave)
            except BaseException:
                umount()
                raise
            return Case([stage, "--out", str(run)], out=[run], protect=protect_run(run),
                        cleanup=umount, check=lambda o: _disk_notes(o, run))
        return setup

    def report_case(ctx: Ctx) -> Case:
        runs = report_runs(ctx, {"a": None})
        disk = ctx.work / "disk"
        umount = mount_tmpfs(disk, "1m")
        fill_disk(disk, 0)
        return Case(["report", str(runs), "--out", str(disk / "report")], out=[disk / "report"],
                    cleanup=umount)

    def render_case(ctx: Ctx) -> Case:
        case = sweep_case(ctx, {})
        disk = ctx.work / "disk"
        umount = mount_tmpfs(disk, "1m")
        fill_disk(disk, 0)
        case.args[case.args.index("--out") + 1] = str(disk / "jobs")
        case.out = [disk / "jobs", ctx.work / "runs"]
        case.cleanup = umount
        return case

    return [
        Try("full disk: data prepare digits into a 2 MiB tmpfs", prepare_case,
            ("no space left",), root_only=True),
        Try("full disk: generate with 256 KiB left (old unlearnable set kept)",
            stage_case("generate", 256 * 1024), ("no space left",), needs=("run",),
            root_only=True),
        Try("full disk: train with 256 KiB left (1.2 MB epoch checkpoints)",
            stage_case("train", 256 * 1024), ("no space left",), needs=("run",), root_only=True),
        Try("full disk: report into a full tmpfs", report_case, ("no space left",),
            needs=("run",), root_only=True),
        Try("full disk: sweep render into a full tmpfs", render_case, ("no space left",),
            root_only=True),
    ]


def _disk_notes(o: Outcome, run: Path) -> None:
    """Note what a full disk left in a run directory: epoch checkpoints that do not load (a
    partial file under its final name) and results still set aside in .replaced."""
    import torch

    notes = []
    for ckpt in sorted(run.glob("checkpoints/*/*.ckpt")):
        try:
            torch.load(ckpt, map_location="cpu", weights_only=True)
        except Exception:
            size = ckpt.stat().st_size
            notes.append(f"{ckpt.relative_to(run)} ({size} bytes) does not load")
    if (run / ".replaced").is_dir():
        moved = json.loads((run / ".replaced/moved.json").read_text())
        notes.append(f".replaced/ still holds {', '.join(moved)}")
    o.note = "; ".join(notes)


# -- shard directories (data verify / info) ------------------------------------------------------

def verify_try(name: str, damage: Callable[[Path, Ctx], object], *expect: str,
               command: str = "verify") -> Try:
    """``hpcue data verify`` of the 8-px digits, damaged: one error naming the file or key, and
    the directory (an input) and any file outside it unchanged."""
    def setup(ctx: Ctx) -> Case:
        d = ctx.digits_copy()
        victim = ctx.work / SHARD
        victim.write_text("the user's own file\n")
        damage(d, ctx)
        return Case(["data", command, str(d)], guard=[victim])
    return Try(f"data {command}: {name}", setup, expect, needs=("digits",))


def _set_shard(file: str) -> Callable[[Path, Ctx], None]:
    def damage(d: Path, ctx: Ctx) -> None:
        value = file.replace("{work}", str(ctx.work))
        edit_meta(d, lambda m: m["splits"]["train"]["shards"][0].update(file=value))
    return damage


def verify_tries() -> list[Try]:
    def labels(values: Callable[[int], np.ndarray]) -> Callable[[Path, Ctx], None]:
        return lambda d, ctx: rewrite_shard(d, SHARD, labels=values(674))

    def one_class(d: Path, ctx: Ctx) -> None:
        rewrite_shard(d, SHARD, labels=np.zeros(674, np.int64))
        rewrite_shard(d, "train-00001-of-00002.h5", labels=np.zeros(673, np.int64))

    meta = "meta.json"
    return [
        verify_try("a shard file ../x.h5 (outside the directory)", _set_shard(f"../{SHARD}"),
                   "splits.train.shards[0].file", f"../{SHARD}"),
        verify_try("a shard file that is an absolute path", _set_shard(f"{{work}}/{SHARD}"),
                   "splits.train.shards[0].file"),
        verify_try("meta.json that is a JSON list",
                   lambda d, ctx: (d / meta).write_text("[1, 2]"), meta, "JSON object"),
        verify_try("meta.json without classes", lambda d, ctx: edit_meta(
            d, lambda m: m.pop("classes")), meta, "classes"),
        verify_try("meta.json not JSON", lambda d, ctx: (d / meta).write_text("{"), meta),
        verify_try("meta.json not UTF-8", lambda d, ctx: (d / meta).write_bytes(b'{"x": "\xff"}'),
                   meta),
        verify_try("meta.json nested 100000 deep",
                   lambda d, ctx: (d / meta).write_text("[" * 100000), meta),
        verify_try("meta.json format_version 2", lambda d, ctx: edit_meta(
            d, lambda m: m.update(format_version=2)), "format_version"),
        verify_try("meta.json image_shape 8 x 8 x 1", lambda d, ctx: edit_meta(
            d, lambda m: m.update(image_shape=[8, 8, 1])), "image_shape"),
        verify_try("meta.json counts that do not add up", lambda d, ctx: edit_meta(
            d, lambda m: m["splits"]["train"].update(num_samples=5)), "num_samples"),
        verify_try("one shard listed twice", lambda d, ctx: edit_meta(
            d, lambda m: m["splits"]["test"]["shards"][0].update(
                file=m["splits"]["test"]["shards"][1]["file"])), "listed twice"),
        verify_try("an HDF5 dataset renamed imgs (checksum fixed)", lambda d, ctx: rewrite_shard(
            d, SHARD, images=None, imgs=np.zeros((674, 8, 8, 3), np.uint8)), SHARD, "'images'"),
        verify_try("labels beyond the classes (checksum fixed)",
                   labels(lambda n: np.full(n, 12, np.int64)), SHARD, "labels"),
        verify_try("float labels (checksum fixed)", labels(lambda n: np.zeros(n, np.float32)),
                   SHARD, "labels"),
        verify_try("repeated sample ids (checksum fixed)", lambda d, ctx: rewrite_shard(
            d, SHARD, index=np.zeros(674, np.int64)), "sample ids"),
        verify_try("images of another size (checksum fixed)", lambda d, ctx: rewrite_shard(
            d, SHARD, images=np.zeros((674, 4, 4, 3), np.uint8)), SHARD, "images"),
        verify_try("random bytes as a shard (checksum fixed)", lambda d, ctx: (
            random_bytes(d / SHARD), fix_sha(d, SHARD)), SHARD),
        verify_try("a truncated shard", lambda d, ctx: truncate(d / SHARD), SHARD, "checksum"),
        verify_try("a missing shard", lambda d, ctx: (d / SHARD).unlink(), SHARD, "missing"),
        verify_try("an empty train split", lambda d, ctx: edit_meta(
            d, lambda m: m["splits"].update(train={"num_samples": 0, "shards": []})),
            "'train'", "empty"),
        verify_try("no test split", lambda d, ctx: edit_meta(d, lambda m: m["splits"].pop(
            "test")), "'test'"),
        verify_try("a one-class training split (checksums fixed)", one_class, "only class"),
        Try("data verify: a directory that does not exist", lambda ctx: Case(
            ["data", "verify", str(ctx.work / "nope")]), ("nope", "meta.json")),
        verify_try("meta.json that is a JSON list", lambda d, ctx: (d / meta).write_text("[]"),
                   meta, command="info"),
    ]


# -- raw data sets (data prepare) ----------------------------------------------------------------

def prepare_try(name: str, raw: Callable[[Ctx], Path | None], dataset: str, *expect: str,
                options: tuple[str, ...] = ("--image-size", "16")) -> Try:
    def setup(ctx: Ctx) -> Case:
        root = raw(ctx)
        out = ctx.work / "out"
        args = ["data", "prepare", dataset, "--out", str(out), *options]
        if root is not None:
            args += ["--root", str(root)]
        return Case(args, out=[out])
    return Try(f"data prepare: {name}", setup, expect)


def prepare_tries() -> list[Try]:
    def folder(**kw) -> Callable[[Ctx], Path]:
        return lambda ctx: image_folder(ctx.work / "raw", **kw)

    def with_file(write: Callable[[Path], object]) -> Callable[[Ctx], Path]:
        def make(ctx: Ctx) -> Path:
            root = image_folder(ctx.work / "raw")
            write(root / "cat")
            return root
        return make

    def split_folders(train: tuple[str, ...], test: tuple[str, ...] | None):
        def make(ctx: Ctx) -> Path:
            image_folder(ctx.work / "raw" / "train", classes=train)
            if test is not None:
                image_folder(ctx.work / "raw" / "test", classes=test)
            return ctx.work / "raw"
        return make

    def loose_images(ctx: Ctx) -> Path:
        for i in range(4):
            jpeg(ctx.work / "raw" / f"{i}.jpg", seed=i)
        return ctx.work / "raw"

    def empty_classes(ctx: Ctx) -> Path:
        for name in ("cat", "dog"):
            (ctx.work / "raw" / name).mkdir(parents=True)
        return ctx.work / "raw"

    def npz(**kw) -> Callable[[Ctx], Path]:
        return lambda ctx: medmnist_npz(ctx.work / "raw", **kw)

    def npz_random(ctx: Ctx) -> Path:
        (ctx.work / "raw").mkdir()
        random_bytes(ctx.work / "raw" / "bloodmnist.npz")
        return ctx.work / "raw"

    def other_recipe(ctx: Ctx) -> Case:
        d = ctx.digits_copy()
        return Case(["data", "prepare", "digits", "--image-size", "16", "--shards", "2",
                     "--out", str(d)])

    def a_file(ctx: Ctx) -> Case:
        target = _file(ctx.work / "afile")
        return Case(["data", "prepare", "digits", "--image-size", "8", "--out", str(target)])

    float_labels = npz(labels=lambda n: (np.arange(n) % 8 + 0.5)[:, None].astype(np.float32))
    medmnist = "medmnist:bloodmnist"
    return [
        prepare_try("an image folder of one class", folder(classes=("cat",), per_class=6),
                    "imagefolder", "two or more"),
        prepare_try("an image folder with train/ but no test/", split_folders(("a", "b"), None),
                    "imagefolder", "'test'"),
        prepare_try("train/ and test/ with other classes", split_folders(("a", "b"), ("a", "c")),
                    "imagefolder", "differ"),
        prepare_try("a decompression-bomb PNG (100000 x 100000)", with_file(
            lambda d: png_header(d / "bomb.png", 100_000, 100_000)), "imagefolder", "bomb.png"),
        prepare_try("random bytes named x.jpg", with_file(lambda d: random_bytes(d / "x.jpg")),
                    "imagefolder", "x.jpg"),
        prepare_try("a truncated JPEG", with_file(lambda d: (
            jpeg(d / "half.jpg", 9, (64, 64)), truncate(d / "half.jpg"))), "imagefolder",
            "half.jpg"),
        prepare_try("class folders without images", empty_classes, "imagefolder",
                    "no images"),
        prepare_try("an image folder that does not exist", lambda ctx: ctx.work / "nope",
                    "imagefolder", "nope"),
        prepare_try("MedMNIST .npz with float labels (0.5, 1.5, ...)", float_labels, medmnist,
                    "labels"),
        prepare_try("MedMNIST .npz with labels beyond the classes",
                    npz(labels=lambda n: np.full((n, 1), 20, np.int64)), medmnist, "labels"),
        prepare_try("MedMNIST .npz of random bytes", npz_random, medmnist, "bloodmnist.npz"),
        prepare_try("MedMNIST .npz with an empty train split", npz(empty="train"), medmnist,
                    "empty"),
        prepare_try("--image-size 30",
                    lambda ctx: None, "digits", "--image-size", options=("--image-size", "30")),
        prepare_try("an unknown data set name", lambda ctx: None, "nope", "nope"),
        Try("data prepare: --out holding another recipe", other_recipe, ("already holds",),
            needs=("digits",)),
        Try("data prepare: --out that is a regular file", a_file, ("afile",)),
    ]


# -- sweeps --------------------------------------------------------------------------------------

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


# -- reports -------------------------------------------------------------------------------------

def report_runs(ctx: Ctx, runs: dict[str, str | None]) -> Path:
    """A runs folder: per name a results.json (None: the finished run's) and its config.yaml."""
    root = ctx.work / "runs"
    for name, text in runs.items():
        (root / name).mkdir(parents=True)
        results = (ctx.finished / "results.json").read_text()
        (root / name / "results.json").write_text(results if text is None else text)
        shutil.copy(ctx.finished / "config.yaml", root / name / "config.yaml")
    return root


def report_try(name: str, runs: Callable[[dict], dict[str, str | None]], *expect: str,
               extra: Callable[[Path], object] | None = None) -> Try:
    def setup(ctx: Ctx) -> Case:
        good = json.loads((ctx.finished / "results.json").read_text())
        root = report_runs(ctx, runs(good))
        if extra is not None:
            extra(root)
        return Case(["report", str(root)], out=[root / "report"])
    return Try(f"report: {name}", setup, expect, needs=("run",))


def _with(results: dict, **changes: object) -> str:
    return json.dumps({**results, **changes})


def report_tries() -> list[Try]:
    def nan(good: dict) -> dict[str, str | None]:
        return {"a": _with(good, clean_test_acc="NAN").replace('"NAN"', "NaN")}

    def inf_seconds(good: dict) -> dict[str, str | None]:
        return {"a": _with(good, seconds={"train": "INF"}).replace('"INF"', "Infinity")}

    def report_file(ctx: Ctx) -> Case:
        root = report_runs(ctx, {"a": None})
        return Case(["report", str(root), "--out", str(_file(ctx.work / "afile"))])

    def good_and_nan(ctx: Ctx) -> Case:
        good = json.loads((ctx.finished / "results.json").read_text())
        root = report_runs(ctx, {"a": None, "b": nan(good)["a"]})

        def check(o: Outcome) -> tuple[str, str] | None:
            text = (root / "report" / "report.md").read_text()
            csv = (root / "report" / "report.csv").read_text()
            if not any(ln.startswith("- b:") and "clean_test_acc" in ln
                       for ln in text.splitlines()):
                return "silent wrong", "the NaN run b is not listed as failed in report.md"
            if "nan" in csv.lower() or "inf" in csv.lower() or len(csv.splitlines()) != 2:
                return "silent wrong", "report.csv holds a NaN/Infinity, or not one row"
            return None
        return Case(["report", str(root)], out=[root / "report"], check=check)

    def escape_name(ctx: Ctx) -> Case:
        good = json.loads((ctx.finished / "results.json").read_text())
        root = report_runs(ctx, {"a": _with(good, dataset="../../../escape")})
        return Case(["report", str(root), "--out", str(ctx.work / "out")],
                    out=[ctx.work / "out"])

    return [
        report_try("results.json without its keys",
                   lambda good: {"a": json.dumps({"dataset": "digits"})},
                   "results.json", "global_batch_size"),
        report_try("results.json with NaN", nan, "results.json", "clean_test_acc"),
        report_try("results.json with Infinity", inf_seconds, "results.json", "seconds"),
        report_try("results.json not UTF-8", lambda good: {"a": None}, "results.json",
                   extra=lambda root: (root / "a/results.json").write_bytes(b'{"x": "\xff"}')),
        report_try("a damaged sweep.json beside a good run", lambda good: {"a": None},
                   "sweep.json", extra=lambda root: (root / "sweep.json").write_text("[")),
        Try("report: a runs directory that does not exist", lambda ctx: Case(
            ["report", str(ctx.work / "nope")]), ("nope",)),
        Try("report: --out that is a regular file", report_file, ("afile",), needs=("run",)),
        Try("control: report of a good run and a NaN run (the NaN run listed as failed)",
            good_and_nan, None, needs=("run",)),
        Try("control: report of a result whose dataset is ../../../escape", escape_name, None,
            needs=("run",)),
    ]


# -- controls and the shared inputs --------------------------------------------------------------

def base_prepare(ctx: Ctx) -> Case:
    return Case(["data", "prepare", "digits", "--image-size", "8", "--shards", "2", "--out",
                 str(ctx.digits)], out=[ctx.digits])


def base_run(ctx: Ctx) -> Case:
    run = ctx.finished
    return Case(["run", "--out", str(run), *sets(*TINY)], out=[run], timeout=400,
                check=lambda o: results_problem(run))


def resumed_prepare(ctx: Ctx) -> Case:
    """Item 7: a prepare killed after its shards (meta.json never written), one shard's pixels
    flipped since, then the same prepare again: it must rewrite the shard, and verify pass."""
    root = image_folder(ctx.work / "raw", per_class=8)
    out = ctx.work / "out"
    args = ["data", "prepare", "imagefolder", "--root", str(root), "--out", str(out),
            "--image-size", "16", "--shards", "3"]
    first = subprocess.run(cli(*args), env=environment(Case([])), capture_output=True,
                           text=True, timeout=240)
    if first.returncode:
        raise RuntimeError(f"the first prepare failed: {first.stderr[-300:]}")
    shard = out / "train-00001-of-00003.h5"
    good = shard.read_bytes()
    meta = json.loads((out / "meta.json").read_text())
    (out / "prepare.json").write_text(json.dumps(meta["recipe"]))
    (out / "meta.json").unlink()
    flip_image_byte(shard)

    def runner(case: Case) -> Outcome:
        o = run_cli(case)
        if o.rc != 0:
            return o
        verify = run_cli(case, ["data", "verify", str(out)])
        if verify.rc != 0:
            verify.problem = ("silent wrong", f"prepare said OK, verify did not: "
                                              f"{first_line(verify)}")
            verify.rc = 0
            return verify
        if shard.read_bytes() != good:
            o.problem = ("silent wrong", "the damaged shard was kept")
        o.note = first_line(verify)
        return o
    return Case(args, out=[out], runner=runner)


def user_file_kept(ctx: Ctx) -> Case:
    """A prepare into a folder holding another recipe's unfinished shards and a user's own
    file: the shards go, the user's file stays."""
    out = ctx.work / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine\n")
    (out / "prepare.json").write_text(json.dumps({"dataset": "digits", "image_size": 64}))
    (out / "train-00000-of-00009.h5").write_bytes(b"old recipe")

    def check(o: Outcome) -> tuple[str, str] | None:
        if (out / "notes.txt").read_text() != "mine\n":
            return "data lost", "the user's notes.txt changed"
        return None
    return Case(["data", "prepare", "digits", "--image-size", "8", "--shards", "2", "--out",
                 str(out)], out=[out], check=check)


def _info(o: Outcome) -> tuple[str, str] | None:
    info = json.loads(o.stdout)
    o.note = f"{info['dataset']}: {info['splits']}"
    return None


def controls() -> list[Try]:
    def finished_run(ctx: Ctx) -> Path:
        return ctx.finished
    return [
        Try("control: data prepare digits (8 px, 2 shards), shared by the data tries",
            base_prepare, None),
        Try("control: the finished tiny run, shared (copied) by the run tries", base_run, None),
        Try("control: data verify of the run's data", lambda ctx: Case(
            ["data", "verify", str(finished_run(ctx) / "data")]), None, needs=("run",)),
        Try("control: data info of the run's unlearnable set", lambda ctx: Case(
            ["data", "info", str(finished_run(ctx) / "unlearnable")], check=_info),
            None, needs=("run",)),
        Try("control: sweep render configs/sweeps/digits-local.yaml --scheduler slurm",
            render_control, None),
        Try("control: report on a copy of the finished run", lambda ctx: Case(
            ["report", str(report_runs(ctx, {"a": None}))], out=[ctx.work / "runs/report"]),
            None, needs=("run",)),
        Try("control: a resumed prepare rewrites a damaged shard, then verify", resumed_prepare,
            None),
        Try("control: prepare over another recipe's shards keeps the user's own file",
            user_file_kept, None),
    ]


def all_tries() -> list[Try]:
    return [*controls(), *config_tries(), *divergence_tries(), *run_dir_tries(),
            *kill_tries(), *lock_tries(), *full_disk_tries(), *verify_tries(),
            *prepare_tries(), *sweep_tries(), *report_tries()]


# -- the campaign --------------------------------------------------------------------------------

def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="skip the tries that need the finished run (and the run itself)")
    parser.add_argument("--only", action="append", default=[], metavar="TEXT",
                        help="only the tries whose name holds TEXT (repeatable; the shared "
                             "inputs they need are still made)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    parser.add_argument("--list", action="store_true", help="list the tries and exit")
    args = parser.parse_args()

    tries = all_tries()
    if args.list:
        for t in tries:
            print(t.name)
        return 0
    root = Path(tempfile.mkdtemp(prefix="hpcue-faults-"))
    base = root / "base"
    base.mkdir()
    shared = {"digits": tries[0], "run": tries[1]}  # the inputs other tries copy

    def selected(t: Try) -> bool:
        return not args.only or any(text in t.name for text in args.only)
    needed = {key for t in tries if selected(t) for key in t.needs}
    made: dict[str, bool] = {}
    counts: Counter[str] = Counter()
    skipped: list[str] = []
    t0 = time.monotonic()
    try:
        for i, t in enumerate(tries):
            base_of = next((key for key, s in shared.items() if s is t), None)
            if not (selected(t) or base_of in needed):
                continue
            why = None
            if args.quick and ("run" in t.needs or base_of == "run"):
                why = "--quick"
            elif t.root_only and os.geteuid() != 0:
                why = "needs root (mounts a tmpfs)"
            elif any(not made.get(key) for key in t.needs):
                why = f"the shared {', '.join(t.needs)} could not be made"
            if why is not None:
                skipped.append(f"skipped | {t.name} | {why}")
                continue
            ctx = Ctx(root / "tries" / f"{i:03d}-{slug(t.name)}", base)
            started = time.monotonic()
            category, line = run_try(t, ctx)
            line = line.replace(str(ctx.work), "<try>").replace(str(root), "<tmp>")
            if base_of is not None:
                made[base_of] = category == "ok"
            counts[category] += 1
            print(f"{category} | {t.name} | {line[:700]} ({time.monotonic() - started:.0f} s)",
                  flush=True)
            if not args.keep:
                shutil.rmtree(ctx.work, ignore_errors=True)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
        else:
            print(f"kept {root}")
    for line in skipped:
        print(line)
    total = sum(counts.values())
    print(f"\n{'category':<16}{'tries':>6}")
    for category in CATEGORIES:
        if counts[category] or category in CATEGORIES[:6]:
            print(f"{category:<16}{counts[category]:>6}")
    print(f"{'total':<16}{total:>6}   ({len(skipped)} skipped, "
          f"{time.monotonic() - t0:.0f} s)")
    extra = "".join(f" {c.replace(' ', '-')} {counts[c]}" for c in CATEGORIES[6:] if counts[c])
    print(f"tries {total} clear {counts['clear error']} traceback {counts['traceback']} "
          f"silent {counts['silent wrong']} lost {counts['data lost']} "
          f"security {counts['security']} ok {counts['ok']}{extra}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
