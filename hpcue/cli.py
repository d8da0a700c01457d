"""The command line only: parse, load the config, call one function."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from hpcue.config import ConfigError, load_config
from hpcue.rundir import RunDir

STAGES = ("cluster", "train", "generate", "evaluate")


def _add_run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="YAML config (default: the embedded digits run)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config key, e.g. --set train.epochs=3 (repeatable)")
    p.add_argument("--out", type=Path, help="run directory (default: runs/<name>)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hpcue", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_run_args(sub.add_parser("run", help="the whole UC pipeline: cluster, train, "
                                             "generate, evaluate"))
    for stage in STAGES:
        _add_run_args(sub.add_parser(stage, help=f"only the {stage} stage, reading the previous "
                                                 "stage's files from --out"))
    return parser


def _resolve(args: argparse.Namespace):
    """Config for a command. A stage run on an existing run directory reuses its config."""
    out = args.out
    config_path = args.config
    if config_path is None and out is not None and RunDir(out).config.is_file():
        config_path = RunDir(out).config
    cfg = load_config(config_path, args.overrides)
    return cfg, Path(out) if out is not None else Path("runs") / cfg.name


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg, out = _resolve(args)
        from hpcue.pipeline import print_summary, run_pipeline, run_stage

        if args.command == "run":
            print_summary(run_pipeline(cfg, out))
        else:
            path = run_stage(args.command, cfg, out)
            print(f"[hpcue] {args.command}: wrote {path}")
    except (ConfigError, FileNotFoundError, ValueError) as exc:
        if os.environ.get("HPCUE_DEBUG"):
            raise
        print(f"hpcue: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
