"""Config tries: bad ``--set`` values and crafted config files given to ``hpcue run``.

NaN and out-of-range values, unknown keys, files that are not YAML or whose base loops, and
run names that would escape the run directory: each must be one error naming the key or file.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from .core import TINY, Case, Ctx, Try, sets


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

