"""The report's figures drawn from one point: one batch size, one world size. matplotlib's own
limits around a single value are a sliver (0.96 to 1.04 of it, or 32 to 33.4 on a log axis),
with ticks like 1.975 and each seed's markers pushed to the axis' edge."""

from __future__ import annotations

import pytest

from hpcue.figures.canvas import pyplot
from hpcue.figures.sweep import SEED_OFFSET, Line, batch_figure, throughput_figure


def _row(batch: int, world: int, seeds: list[float]) -> dict:
    """A report row as ``sweep/report.py`` summarises it (the keys the figures read)."""
    mean = sum(seeds) / len(seeds)
    return {"dataset": "digits", "global_batch_size": batch, "world_size": world,
            "unlearnable_test_acc_mean": mean, "unlearnable_test_acc_std": 0.01,
            "clean_test_acc_mean": 0.9, "clean_test_acc_std": None,
            "random_test_acc_mean": 0.4, "random_test_acc_std": 0.02,
            "_unlearnable_runs": seeds, "stage1_images_per_second": 3200.0}


@pytest.fixture
def figures():
    """Every figure a test opens, closed after it."""
    opened: list = []
    yield opened
    for fig in opened:
        pyplot().close(fig)


def test_a_one_batch_plot_spans_an_octave_either_side_with_its_point_and_seeds_inside(figures):
    row = _row(32, 2, [0.5, 0.52])
    fig = batch_figure("digits", [Line("digits", "", [row])], [row], 0.1)
    figures.append(fig)
    ax = fig.axes[0]
    assert ax.get_xlim() == pytest.approx((16, 64))  # not 31.9 to 33.4
    assert list(ax.get_xticks()) == [32] and ax.xaxis.get_minorticklocs().size == 0
    assert [t.get_text() for t in ax.get_xticklabels()] == ["32"]
    low, high = ax.get_xlim()
    assert low < 32 < 32 * SEED_OFFSET < high / 1.5  # the seeds beside their mean, not at the edge
    # the point is drawn with its interval: mean ± std as an error bar
    (unlearnable,) = [c for c in ax.containers if c.get_label() == "unlearnable"]
    assert list(unlearnable[0].get_ydata()) == pytest.approx([0.51]) and unlearnable.has_yerr


def test_a_one_world_throughput_plot_has_whole_ranks_and_a_scale_from_zero(figures):
    fig = throughput_figure([_row(32, 1, [0.5]), _row(64, 1, [0.5]) | {
        "stage1_images_per_second": 2800.0}])
    figures.append(fig)
    ax = fig.axes[0]
    assert list(ax.get_xticks()) == [1]  # not 0.96, 0.98, ..., 1.04
    assert ax.get_xlim() == pytest.approx((0, 2))
    bottom, top = ax.get_ylim()
    assert bottom == 0 and top > 3200  # not 0.96 to 1.04 of the mean
    (bars,) = ax.containers  # the mean, and the range of its runs as an error bar
    (segment,) = bars.lines[2][0].get_segments()
    assert [y for _, y in segment] == pytest.approx([2800, 3200])
