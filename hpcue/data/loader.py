"""Datasets and samplers over shard directories: what each rank reads, in which order.

Rank-aware reading: given rank and world size each rank reads a disjoint part of a split,
whole shards when the shard count divides by the world size (one file per rank, sequential
reads), a strided split of the (shuffled) sample ids otherwise. Shuffling is a permutation seeded
by seed + epoch, so every rank computes the same one with no communication.

Padding: training needs the same number of batches on every rank, so ``pad=True`` tops a short
rank up with its own first samples (each sample is read at least once an epoch, a few twice).
Evaluation uses ``pad=False``: every sample exactly once across ranks, ranks may differ by a few.
"""

from __future__ import annotations

import os

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset, Sampler, default_collate

from hpcue.data.shard_set import ShardSet
from hpcue.data.shards import ShardError, open_h5


class IndexedImages(Dataset):
    """In-memory arrays; yields (image uint8 3xHxW, label, global index)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray) -> None:
        self.images = torch.from_numpy(np.ascontiguousarray(images))
        self.labels = torch.from_numpy(np.asarray(labels, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        return self.images[i].permute(2, 0, 1), self.labels[i], i


class ShardDataset(Dataset):
    """One split of a shard directory; item i is global sample id i.

    HDF5 handles are opened lazily in the process that reads (each DataLoader worker opens its
    own; a handle never crosses a fork). ``cache=True`` reads the split into memory once.
    """

    def __init__(self, shards: ShardSet, split: str, cache: bool = False) -> None:
        self.paths = [str(p) for p in shards.paths(split)]
        self.counts = [s.num_samples for s in shards.shards(split)]
        self.offsets = np.concatenate([[0], np.cumsum(self.counts)]).astype(np.int64)
        self.labels = torch.from_numpy(shards.labels(split))  # read once, not per item
        self._handles: dict[int, h5py.Dataset] = {}
        self._pid = -1
        self._memory: IndexedImages | None = None
        if cache:
            arrays = shards.read_split(split)
            self._memory = IndexedImages(arrays.images, arrays.labels)

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_handles"], state["_pid"] = {}, -1
        return state

    def _images(self, s: int) -> h5py.Dataset:
        """The shard's image dataset, opened once per process (name lookups cost per item)."""
        if self._pid != os.getpid():
            self._handles, self._pid = {}, os.getpid()
        if s not in self._handles:
            f = open_h5(self.paths[s])
            if "images" not in f:
                raise ShardError(f"{self.paths[s]}: no 'images' dataset")
            self._handles[s] = f["images"]
        return self._handles[s]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        i = int(i)
        if self._memory is not None:
            return self._memory[i]
        s = int(np.searchsorted(self.offsets, i, side="right") - 1)
        image = torch.from_numpy(self._images(s)[i - int(self.offsets[s])]).permute(2, 0, 1)
        return image, self.labels[i], i


def rank_indices(counts: list[int], rank: int, world_size: int, seed: int, epoch: int,
                 shuffle: bool) -> np.ndarray:
    """This rank's sample ids for one epoch, before padding."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside world size {world_size}")
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    rng = np.random.default_rng([seed, epoch])
    if len(counts) % world_size == 0:
        mine = np.concatenate([np.arange(offsets[s], offsets[s + 1])
                               for s in range(rank, len(counts), world_size)] or [np.zeros(0)])
        mine = mine.astype(np.int64)
        return rng.permutation(mine) if shuffle else mine
    ids = np.arange(offsets[-1])
    if shuffle:
        ids = rng.permutation(ids)
    return ids[rank::world_size]


class RankSampler(Sampler[int]):
    """Deterministic, rank-disjoint order; call ``set_epoch`` each epoch for a new order."""

    def __init__(self, counts: list[int], rank: int = 0, world_size: int = 1, seed: int = 0,
                 shuffle: bool = True, pad: bool = True) -> None:
        self.counts, self.rank, self.world_size = list(counts), rank, world_size
        self.seed, self.shuffle, self.pad = seed, shuffle, pad
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _target(self) -> int:
        return max(len(rank_indices(self.counts, r, self.world_size, self.seed, self.epoch,
                                    False)) for r in range(self.world_size))

    def indices(self) -> np.ndarray:
        mine = rank_indices(self.counts, self.rank, self.world_size, self.seed, self.epoch,
                            self.shuffle)
        if self.pad and len(mine):
            short = self._target() - len(mine)
            if short > 0:
                mine = np.concatenate([mine, np.resize(mine, short)])
        return mine

    def __iter__(self):
        return iter(self.indices().tolist())

    def __len__(self) -> int:
        return len(self.indices())


def make_loader(dataset: Dataset, batch_size: int, *, shuffle: bool, seed: int,
                num_workers: int = 0, rank: int = 0, world_size: int = 1,
                pad: bool | None = None,
                pin_memory: bool = False) -> torch.utils.data.DataLoader:
    """A DataLoader whose order depends only on (seed, epoch, rank, world size); ``pin_memory``:
    batches in page-locked memory, so the copy to a GPU runs beside the step."""
    counts = getattr(dataset, "counts", [len(dataset)])
    sampler = RankSampler(counts, rank, world_size, seed, shuffle,
                          pad=shuffle if pad is None else pad)
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
        persistent_workers=num_workers > 0, pin_memory=pin_memory,
    )


class EpochOrder(Sampler[int]):
    """One permutation of all sample ids an epoch, drawn from (seed, epoch), the same on every
    rank (``OwnedBatches`` cuts it into global batches; Lightning sets its epoch)."""

    def __init__(self, total: int, seed: int) -> None:
        self.total, self.seed, self.epoch = total, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        return iter(np.random.default_rng([self.seed, self.epoch]).permutation(self.total)
                    .tolist())

    def __len__(self) -> int:
        return self.total


class OwnedBatches(Sampler[list[int]]):
    """Global batches of one shared order, each rank given only the ids it owns (id mod world
    size = rank: a fixed partition across epochs).

    For attacks that keep one delta per image: a rank updates only its own images' deltas, yet
    the global batches are the ones a single process would see, so the data-parallel model
    steps match one process's up to float order. A rank's share of a batch varies in size and
    may be empty.
    """

    def __init__(self, total: int, global_batch: int, rank: int, world_size: int,
                 seed: int) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world size {world_size}")
        self.sampler = EpochOrder(total, seed)
        self.global_batch, self.rank, self.world_size = global_batch, rank, world_size

    def __iter__(self):
        order = list(self.sampler)
        for start in range(0, len(order), self.global_batch):
            yield [i for i in order[start:start + self.global_batch]
                   if i % self.world_size == self.rank]

    def __len__(self) -> int:
        return -(-self.sampler.total // self.global_batch)

    @property
    def rank_images(self) -> int:
        """The images this rank reads an epoch (each of its own once, none padded)."""
        return len(range(self.rank, self.sampler.total, self.world_size))


def owned_ids(total: int, rank: int, world_size: int) -> torch.Tensor:
    """The ids ``OwnedBatches`` gives this rank, in order."""
    return torch.arange(rank, total, world_size)


def make_owned_loader(dataset: Dataset, global_batch: int, *, seed: int, num_workers: int = 0,
                      rank: int = 0, world_size: int = 1,
                      pin_memory: bool = False) -> torch.utils.data.DataLoader:
    """A DataLoader of this rank's owned part of each global batch (``OwnedBatches``); an empty
    part comes as an empty batch of the right shapes."""
    return torch.utils.data.DataLoader(
        dataset, batch_sampler=OwnedBatches(len(dataset), global_batch, rank, world_size, seed),
        num_workers=num_workers, collate_fn=CollateOrEmpty(dataset),
        persistent_workers=num_workers > 0, pin_memory=pin_memory)


class CollateOrEmpty:
    """``default_collate``, or for an empty share an empty batch of the dataset's shapes (a
    class, not a closure: loader workers started by spawn must pickle it)."""

    def __init__(self, dataset: Dataset) -> None:
        self.empty = [t[:0] for t in default_collate([dataset[0]])]

    def __call__(self, items: list):
        return default_collate(items) if items else self.empty
