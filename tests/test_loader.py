"""The rank-aware loader: every sample once per epoch across ranks, new orders each epoch."""

import numpy as np
import pytest
import torch

from hpcue.data.loader import RankSampler, ShardDataset, make_loader, rank_indices
from hpcue.data.prepare import PrepareOptions, prepare
from hpcue.data.shard_set import open_shards
from hpcue.data.shards import shard_bounds
from tests import fabricate


def _counts(n, shards):
    return [b - a for a, b in shard_bounds(n, shards)]


@pytest.mark.parametrize("world", [1, 2, 3])
@pytest.mark.parametrize("num_shards", [1, 2, 3, 4, 5, 6])
@pytest.mark.parametrize("shuffle", [True, False])
def test_each_sample_exactly_once_across_ranks(world, num_shards, shuffle):
    counts = _counts(101, num_shards)
    for epoch in (0, 1):
        parts = []
        for rank in range(world):
            s = RankSampler(counts, rank, world, seed=7, shuffle=shuffle, pad=False)
            s.set_epoch(epoch)
            parts.append(list(s))
        everything = sorted(i for p in parts for i in p)
        assert everything == list(range(101))


@pytest.mark.parametrize("world,num_shards", [(2, 4), (3, 4), (3, 6), (2, 3)])
def test_padding_gives_equal_lengths_and_covers_all(world, num_shards):
    counts = _counts(101, num_shards)
    parts = [list(RankSampler(counts, r, world, seed=0, pad=True)) for r in range(world)]
    assert len({len(p) for p in parts}) == 1
    assert set().union(*parts) == set(range(101))
    assert sum(map(len, parts)) - 101 < world * max(counts)


def test_whole_shards_per_rank_when_divisible():
    counts = _counts(40, 4)  # shards of 10
    mine = sorted(rank_indices(counts, 1, 2, seed=0, epoch=0, shuffle=True))
    assert mine == list(range(10, 20)) + list(range(30, 40))


def test_orders_differ_between_epochs_and_repeat_for_a_seed():
    counts = _counts(64, 3)
    s = RankSampler(counts, 0, 2, seed=1)
    first = list(s)
    s.set_epoch(1)
    second = list(s)
    assert first != second and sorted(first) != [] and set(first) | set(second)
    s.set_epoch(0)
    assert list(s) == first
    assert list(RankSampler(counts, 0, 2, seed=2)) != first


def test_reads_match_the_shards_with_and_without_workers(tmp_path):
    root = fabricate.image_folder(tmp_path / "raw", per_class=9)
    shards = open_shards(prepare("imagefolder", root, tmp_path / "o",
                                 PrepareOptions(image_size=32, shards=3)))
    arrays = shards.read_split("train")
    for workers, cache in ((0, False), (2, False), (0, True)):
        ds = ShardDataset(shards, "train", cache=cache)
        seen = {}
        for x, y, idx in make_loader(ds, 4, shuffle=True, seed=0, num_workers=workers):
            for xi, yi, i in zip(x, y, idx.tolist(), strict=True):
                seen[i] = (xi, int(yi))
        assert sorted(seen) == list(range(len(arrays)))
        for i, (x, y) in seen.items():
            expected = torch.from_numpy(arrays.images[i]).permute(2, 0, 1)
            assert x.dtype == torch.uint8 and torch.equal(x, expected) and y == arrays.labels[i]


def test_bad_rank():
    with pytest.raises(ValueError, match="rank 2 outside world size 2"):
        rank_indices([10], 2, 2, 0, 0, True)
    assert np.array_equal(rank_indices([5], 0, 1, 0, 0, False), np.arange(5))
