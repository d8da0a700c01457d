"""The command line only: parse, load the config, call one function."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from hpcue.config import load_config
from hpcue.distributed.launchers import LAUNCHER_CHOICES
from hpcue.distributed.threads import limit_threads_per_rank
from hpcue.errors import HpcueError, Stopped
from hpcue.stages.rundir import STAGES, RunDir


def _add_run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="YAML config (default: the embedded digits run)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config key, e.g. --set train.epochs=3 (repeatable)")
    p.add_argument("--out", type=Path, help="run directory (default: runs/<name>)")
    p.add_argument("--launcher", choices=LAUNCHER_CHOICES,
                   help="skip launcher detection (sets runtime.launcher)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hpcue", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_run_args(sub.add_parser("run", help="the whole UC pipeline: cluster, train, "
                                             "generate, evaluate"))
    for stage in STAGES:
        _add_run_args(sub.add_parser(stage, help=f"only the {stage} stage, reading the previous "
                                                 "stage's files from --out"))
    data = sub.add_parser("data", help="prepare, verify and describe sharded data sets")
    dsub = data.add_subparsers(dest="data_command", required=True)
    prep = dsub.add_parser("prepare", help="raw data set -> HDF5 shards")
    prep.add_argument("name", help="digits, oxford-iiit-pet, flowers102, imagefolder, "
                                   "medmnist:<flag>")
    prep.add_argument("--root", type=Path, help="folder holding the raw files")
    prep.add_argument("--out", type=Path, required=True, help="shard directory to write")
    prep.add_argument("--image-size", type=int, default=224)
    prep.add_argument("--shards", type=int, default=8, help="shards per split")
    prep.add_argument("--compression", default="none", help="none, lzf or gzip")
    prep.add_argument("--size", type=int, help="MedMNIST source size: 28, 64, 128 or 224")
    prep.add_argument("--download", action="store_true",
                      help="MedMNIST only: fetch the .npz with medmnist's downloader")
    prep.add_argument("--seed", type=int, default=0, help="seed of splits the data leaves open")
    for name, text in (("verify", "check checksums, shapes, labels and counts"),
                       ("info", "describe a shard directory")):
        dsub.add_parser(name, help=text).add_argument("dir", type=Path)
    sweep = sub.add_parser("sweep", help="batch-size sweeps: render, submit, status, local")
    ssub = sweep.add_subparsers(dest="sweep_command", required=True)
    for name, text in (("render", "one job script per point, from the shipped templates"),
                       ("submit", "sbatch/bsub every unfinished point"),
                       ("status", "where each point stands"),
                       ("local", "run every unfinished point here, one after another")):
        p = ssub.add_parser(name, help=text)
        p.add_argument("spec", help="a sweep spec's path, or a shipped spec's name "
                                    "(digits-local, paper-frontier, paper-summit, ...)")
        p.add_argument("--machines", type=Path, action="append", metavar="DIR",
                       help="a folder of your own machine profiles, searched before the shipped "
                            "ones (repeatable; default: $HPCUE_MACHINES, ':'-separated)")
        p.add_argument("--runs", type=Path, default=Path("runs"),
                       help="where the points' run directories go (default: runs; render "
                            "creates them, for the job logs)")
        if name == "render":
            p.add_argument("--scheduler", help="slurm or lsf (default: the machine profile's; "
                                               "another one is refused)")
            p.add_argument("--out", type=Path, required=True)
        if name == "local":
            p.add_argument("--mpiexec", type=int, metavar="N", help="run each point under "
                                                                   "mpiexec -n N")
    doc = sub.add_parser("doctor", help="check versions, GPUs, the launcher, an all-reduce and "
                                        "every stage at tiny sizes (about two minutes)")
    doc.add_argument("--config", type=Path, help="YAML config whose runtime settings (and "
                                                 "surrogate weights) to check")
    doc.add_argument("--set", dest="overrides", action="append", default=[],
                     metavar="KEY=VALUE", help="override one config key (repeatable)")
    doc.add_argument("--launcher", choices=LAUNCHER_CHOICES, help="skip launcher detection")
    doc.add_argument("--out", type=Path, default=Path("runs"),
                     help="folder for the tiny run (on a shared file system across nodes; "
                          "removed when it passes)")
    rep = sub.add_parser("report", help="CSV, Markdown table and plots from a runs directory")
    rep.add_argument("runs", type=Path)
    rep.add_argument("--out", type=Path, help="default: RUNS/report")
    return parser


def _sweep_command(args: argparse.Namespace) -> int:
    from hpcue.sweep import submit as sweeps
    from hpcue.sweep.render import render
    from hpcue.sweep.spec import load_sweep

    sweep = load_sweep(args.spec, args.machines)
    for note in sweep.notes:
        print(f"[hpcue] {note}")
    for dropped, kept in sweep.same_as.items():
        print(f"[hpcue] {dropped}: skipped, it runs exactly what {kept} runs")
    if args.sweep_command == "render":
        paths = render(sweep, args.scheduler, args.out, args.runs)
        print(f"[hpcue] rendered {len(paths)} {sweep.machine.scheduler} scripts into {args.out}")
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

    from hpcue.data.shards import open_shards, verify

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


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    limit_threads_per_rank()  # before torch is imported
    # a job's wall time (SIGTERM) or Ctrl-C: a non-zero exit that says where to resume. During a
    # training Lightning's own SIGTERM handler runs first, then this one.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _stop)
    try:
        if args.command == "data":
            _data_command(args)
            return 0
        if args.command == "sweep":
            return _sweep_command(args)
        if args.command == "doctor":
            from hpcue.doctor import doctor

            overrides = [*args.overrides, *([f"runtime.launcher={args.launcher}"]
                                            if args.launcher else [])]
            return doctor(load_config(args.config, overrides), args.out)
        if args.command == "report":
            from hpcue.sweep.report import report

            for kind, paths in report(args.runs, args.out).items():
                for path in paths if isinstance(paths, list) else [paths]:
                    print(f"[hpcue] {kind}: {path}")
            return 0
        cfg, out = _resolve(args)
        from hpcue.pipeline import print_summary, run_pipeline, run_stage, start

        start(cfg)
        if args.command == "run":
            print_summary(run_pipeline(cfg, out))
        else:
            path = run_stage(args.command, cfg, out)
            print(f"[hpcue] {args.command}: wrote {path}")
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
