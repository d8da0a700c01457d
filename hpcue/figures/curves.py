"""The evaluate stage's figure: every arm's victims, clean test accuracy after each epoch."""

from __future__ import annotations

import numpy as np

from hpcue.figures.canvas import encode, pyplot


def draw_curves(curves: dict[str, list[list[float]]], epochs: int) -> bytes:
    """PNG: mean clean test accuracy per epoch of every arm, the seeds' range shaded.

    ``curves[arm]``: one list per seed of its accuracy after each epoch (fewer than ``epochs``
    when the training stopped early)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    xs = range(1, epochs + 1)
    for arm, runs in curves.items():
        values = np.array(runs)
        line = ax.plot(xs[:values.shape[1]], values.mean(0), marker="o", ms=3, label=arm)
        ax.fill_between(xs[:values.shape[1]], values.min(0), values.max(0), alpha=0.15,
                        color=line[0].get_color())
    ax.set_xlabel("victim epoch")
    ax.set_ylabel("accuracy on the clean test set")
    ax.set_title("Victims over epochs (mean over seeds, range shaded)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return encode(fig, ("png",), dpi=120)["png"]
