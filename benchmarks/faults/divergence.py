"""Divergence tries: a learning rate of 1e30, in a stage and in a fresh run.

The training must stop with one error naming the loss and the learning rate.
"""

from __future__ import annotations

from .core import TINY, Case, Try, sets
from .rundirs import on_copy


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

