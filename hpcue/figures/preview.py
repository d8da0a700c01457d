"""The generate stage's figure, preview.png: per cluster, an image clean and unlearnable and
the cluster's perturbation, amplified so that it can be seen, with the key of that amplification
drawn below it (a perturbation near its bound is drawn black, white or coloured: the key shows
where no change, grey, lies)."""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np

from hpcue.figures.canvas import pyplot

#: the most clusters a preview shows (the paper uses K = 10); more would make a figure nobody
#: reads and a PNG of tens of megapixels
PREVIEW_MAX_ROWS = 64
#: the shade of a cell that has no image (an empty cluster), on a 0 (black) .. 1 (white) scale
NO_IMAGE_GREY = 0.85
#: inches below the columns for the perturbation's key: its strip and tick labels
KEY_HEIGHT = 0.4


@dataclass(frozen=True)
class Preview:
    """A drawn preview: its PNG bytes, and the texts read back from the figure itself."""

    png: bytes
    size: tuple[int, int]      # width, height in pixels
    title: str
    columns: list[str]         # the column titles, left to right
    labels: list[str]          # one row label per cluster shown, top to bottom
    key: list[str]             # the amplification's key: its tick labels, left to right, and
    #                            its caption


def eps_text(epsilon: float) -> str:
    """epsilon as the n/255 of the paper: 8/255, or 4.5/255 when not a whole number."""
    return f"{epsilon * 255:.3g}/255"


def amplification(epsilon: float) -> str:
    """How much the preview amplifies a perturbation: it shows delta / (2 eps) + 0.5, which maps
    [-eps, eps] onto [0, 1] (grey is no change), so 1 / (2 eps) times."""
    return f"{1 / (2 * epsilon):.3g}"


def preview_columns(epsilon: float) -> list[str]:
    """The column titles (the title says what the amplification maps to)."""
    return ["clean", "unlearnable", f"perturbation × {amplification(epsilon)}"]


def preview_labels(counts: list[int], max_rows: int = PREVIEW_MAX_ROWS) -> list[str]:
    """One label per cluster shown (the first ``max_rows``), empty clusters included."""
    return [f"cluster {k} ({n} image{'' if n == 1 else 's'})"
            for k, n in enumerate(counts[:max_rows])]


def preview_title(epsilon: float, num_clusters: int, dataset: str | None = None,
                  max_rows: int = PREVIEW_MAX_ROWS) -> str:
    head = f"{dataset}: " if dataset else ""
    shown = (f" (first {max_rows} of {num_clusters} clusters shown)"
             if num_clusters > max_rows else "")
    return (f"{head}Unlearnable Clusters, ε = {eps_text(epsilon)}, K = {num_clusters}{shown}\n"
            f"each row: a cluster's first image, clean and unlearnable, and the cluster's\n"
            f"perturbation × {amplification(epsilon)} (±{eps_text(epsilon)} → full range, "
            f"grey = no change)")


def _draw_key(fig, rect: tuple[float, float, float, float]) -> list[str]:
    """The perturbation column's key at ``rect`` (figure fractions): a change of every channel
    from -eps to +eps drawn as that column draws it, grey where there is none. A perturbation
    saturates near its bound, so the column itself may show no grey at all. Its texts: tick
    labels, left to right, then its caption."""
    ax = fig.add_axes(rect)
    ax.imshow(np.linspace(0.0, 1.0, 256)[None], cmap="gray", vmin=0.0, vmax=1.0,
              aspect="auto", extent=(-1, 1, 0, 1), interpolation="bilinear")
    ax.set_xticks([-1, 0, 1], ["−ε", "0", "+ε"], fontsize=7)  # the title says what ε is
    ax.tick_params(axis="x", length=2, pad=1)
    ax.get_xticklabels()[0].set_horizontalalignment("left")
    ax.get_xticklabels()[-1].set_horizontalalignment("right")
    ax.set_yticks([])
    caption = ax.text(-0.04, 0.5, "the perturbation's key, per channel:\ngrey = no change, "
                      "a colour = channels changed unequally", transform=ax.transAxes,
                      ha="right", va="center", fontsize=7, linespacing=1.2)
    return [t.get_text() for t in ax.get_xticklabels()] + [caption.get_text()]


def _column(images: list[np.ndarray | None], rows: int, shape: tuple[int, int], gap: int,
            gray: bool) -> np.ndarray:
    """One column of the figure as a single image in [0, 1]: the rows' H x W x C images (uint8,
    or floats in [0, 1]; None: a grey cell) stacked top to bottom, ``gap`` white pixels apart."""
    h, w = shape
    channels = () if gray else (3,)
    out = np.ones(((h + gap) * rows - gap, w, *channels), np.float32)
    for k in range(rows):
        cell = out[k * (h + gap):k * (h + gap) + h]
        if images[k] is None:
            cell[...] = NO_IMAGE_GREY
        else:
            image = np.asarray(images[k])
            unit = image / np.float32(255.0) if image.dtype == np.uint8 else image
            cell[...] = unit[..., 0] if gray else np.broadcast_to(unit, cell.shape)
    return out


def draw_preview(clean: list[np.ndarray | None], unlearnable: list[np.ndarray | None],
                 deltas: np.ndarray, counts: list[int], epsilon: float, *, gray: bool = False,
                 dataset: str | None = None, max_rows: int = PREVIEW_MAX_ROWS) -> Preview:
    """The preview figure from plain arrays, one row per cluster k < ``max_rows``.

    ``counts[k]``: cluster k's number of images (``len(counts)`` is K); ``clean[k]`` and
    ``unlearnable[k]``: an image of cluster k as uint8 H x W x C, or None when it is empty;
    ``deltas``: K x C x H x W (or its first rows), C = 3 or 1 (gray).

    Each column is one image (the rows stacked), so the cost hardly grows with K: three axes,
    not three a row.
    """
    from matplotlib.patches import Rectangle

    plt = pyplot()

    rows = min(len(counts), max_rows)
    if rows == 0:
        raise ValueError("a preview needs one cluster at least")
    if len(clean) < rows or len(unlearnable) < rows or len(deltas) < rows:
        raise ValueError(f"{rows} rows need {rows} clean and unlearnable images and deltas, "
                         f"got {len(clean)}, {len(unlearnable)} and {len(deltas)}")
    labels, columns = preview_labels(counts, max_rows), preview_columns(epsilon)
    title = preview_title(epsilon, len(counts), dataset, max_rows)
    full = int(deltas.shape[-2])
    # inches at 100 dpi: a cell of about 128 px (80 px past 16 rows), a whole number of screen
    # pixels an image pixel when it can be (a 16 px image is drawn 8 times), 224 px at most
    target, largest = (128, 224) if rows <= 16 else (80, 96)
    cell = min(full * max(1, round(target / full)), largest) / 100
    # an image larger than its cell is thinned first (as nearest-neighbour drawing would):
    # less to draw and to compress
    step = math.ceil(full / (cell * 100))
    thin = [None if x is None else np.asarray(x)[::step, ::step] for x in (*clean, *unlearnable)]
    amplified = np.clip(np.asarray(deltas[:rows, :, ::step, ::step], np.float32)
                        / (2 * epsilon) + 0.5, 0.0, 1.0)
    h, w = shape = amplified.shape[-2:]
    gap = max(1, round(0.1 * h))
    cells = [_column(thin[:len(clean)], rows, shape, gap, gray),
             _column(thin[len(clean):], rows, shape, gap, gray),
             _column(list(amplified.transpose(0, 2, 3, 1)), rows, shape, gap,
                     gray=amplified.shape[1] == 1)]
    span = cell * (h + gap) / h  # a row and the gap below it
    between, left, right, top, bottom = 0.25, 1.75, 0.15, 1.05, 0.1 + KEY_HEIGHT
    content = left + 3 * cell * w / h + 2 * between + right
    width = max(content, 5.6)  # room for the title; the columns are centred in the rest
    left += (width - content) / 2
    height = top + span * rows - (span - cell) + bottom
    fig = plt.figure(figsize=(width, height), dpi=100)
    try:
        fig.suptitle(title, x=0.1 / width, y=1 - 0.08 / height, ha="left", va="top",
                     fontsize=8.5, linespacing=1.3)
        axes = []
        for j, (data, name) in enumerate(zip(cells, columns, strict=True)):
            x = left + j * (cell * w / h + between)
            ax = fig.add_axes((x / width, bottom / height, cell * w / h / width,
                               (height - top - bottom) / height))
            ax.imshow(data, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest",
                      aspect="equal")
            ax.set_title(name, fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.spines[:].set_visible(False)
            for k in range(rows):
                y = k * (h + gap) - 0.5
                ax.add_patch(Rectangle((-0.5, y), w, h, fill=False, linewidth=0.8,
                                       edgecolor="0.35", clip_on=False))
                if j < 2 and (clean, unlearnable)[j][k] is None:
                    ax.text((w - 1) / 2, y + h / 2, "no image", ha="center", va="center",
                            fontsize=8, color="0.3")
            axes.append(ax)
        axes[0].set_yticks([k * (h + gap) + (h - 1) / 2 for k in range(rows)], labels,
                           fontsize=9)
        axes[0].tick_params(axis="y", length=0)
        x = left + 2 * (cell * w / h + between)
        key = _draw_key(fig, (x / width, (KEY_HEIGHT - 0.12) / height, cell * w / h / width,
                              0.1 / height))
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=100)
        return Preview(buffer.getvalue(), tuple(int(v) for v in fig.canvas.get_width_height()),
                       fig.texts[0].get_text(), [ax.get_title() for ax in axes],
                       [t.get_text() for t in axes[0].get_yticklabels()], key)
    finally:
        plt.close(fig)
