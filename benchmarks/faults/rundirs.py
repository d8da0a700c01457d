"""Run directory tries: stage commands on a damaged copy of the finished run.

Truncated, crafted (code-running pickles) or inconsistent files that the stages hand on; a
failure must name the file and leave every result of the copy as it was. ``on_copy`` builds
these tries and is shared with the divergence family.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np

from tests.fabricate import edit_meta, rewrite_shard

from .core import RUN_SHARD, TINY, Case, Ctx, Try, sets
from .inputs import RunsCode, protect_run, random_bytes, truncate, write_pickle


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


def save_torch(path: Path, obj: object) -> None:
    import torch

    torch.save(obj, path)


def edit_state(file: str, key: str, change: Callable) -> Callable[[Path, Ctx], None]:
    """Damage: ``file``'s saved tensor ``key`` replaced by ``change(tensor)``."""
    def damage(run: Path, ctx: Ctx) -> None:
        import torch

        state = torch.load(run / file, weights_only=True)
        state[key] = change(state[key])
        save_torch(run / file, state)
    return damage


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

    nan_deltas = edit_state("perturbations.pt", "deltas",
                            lambda d: d.new_full(d.shape, float("nan")))
    big_deltas = edit_state("perturbations.pt", "deltas", lambda d: d.new_full(d.shape, 0.5))
    other_clusters = edit_state("clusters.pt", "assignments", lambda a: a[:100])

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

