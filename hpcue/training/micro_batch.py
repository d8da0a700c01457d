"""``runtime.max_micro_batch: auto``: the largest micro batch one device can hold, found by trying.

Before a training starts on GPUs, every rank runs one forward and backward pass on a batch of
random images at the planned micro batch. If any rank runs out of memory, all of them halve it
(the rest of the per-rank batch becomes gradient accumulation, so the optimisation is the same)
and try again. The ranks agree through an all-reduce, so none starts training with a micro
batch another could not hold, and a full GPU is one clear error instead of a crash mid-epoch.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from copy import deepcopy
from dataclasses import replace
from typing import Any

import lightning as L
import torch

from hpcue.errors import ConfigError
from hpcue.training import speed
from hpcue.training.batch_plan import BatchPlan

#: the error a device raises when it is out of memory (CUDA; ROCm builds raise the same class)
OUT_OF_MEMORY: tuple[type[BaseException], ...] = (torch.cuda.OutOfMemoryError,)


def with_micro_batch(plan: BatchPlan, micro: int, tried: list[int]) -> BatchPlan:
    return replace(plan, micro_batch_size=micro, micro_batch_tried=tuple(tried),
                   accumulate_grad_batches=plan.per_rank_batch_size // micro)


def smaller_divisor(per_rank: int, micro: int) -> int | None:
    """The largest divisor of ``per_rank`` at most half of ``micro`` (None below 1)."""
    for m in range(micro // 2, 0, -1):
        if per_rank % m == 0:
            return m
    return None


def _raise(error: Exception | None, what: str) -> None:
    if error is not None:
        raise error


def probe_micro_batch(plan: BatchPlan, try_step: Callable[[int], None],
                      any_rank: Callable[[bool], bool],
                      raise_if_any: Callable[[Exception | None, str], None] = _raise,
                      ) -> BatchPlan:
    """The plan at the largest micro batch every rank holds (the sizes tried recorded).

    ``try_step(m)`` runs one forward and backward pass at micro batch ``m`` on this rank;
    ``any_rank(flag)`` is True when the flag is True on any rank (an all-reduce);
    ``raise_if_any`` ends every rank when one failed otherwise than out of memory.
    """
    micro, tried = plan.micro_batch_size, []
    while True:
        tried.append(micro)
        failed, error = False, None
        try:
            try_step(micro)
        except OUT_OF_MEMORY:
            failed = True
        except Exception as exc:  # every rank must hear of it, or the others wait forever
            error = exc
        raise_if_any(error, f"a trial step at micro batch {micro}")
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        if not any_rank(failed):
            return with_micro_batch(plan, micro, tried)
        smaller = smaller_divisor(plan.per_rank_batch_size, micro)
        if smaller is None:
            raise ConfigError(f"{plan.section}: out of device memory even at a micro batch of "
                              f"{micro} (tried {', '.join(map(str, tried))}); use a smaller "
                              f"model or image size, or more memory")
        micro = smaller


def random_batch(size: int, image_size: int, num_classes: int,
                 num_train: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A batch shaped like the loaders' (uint8 images, labels, global ids), for a trial step."""
    gen = torch.Generator().manual_seed(size)
    return (torch.randint(0, 256, (size, 3, image_size, image_size), dtype=torch.uint8,
                          generator=gen),
            torch.randint(0, num_classes, (size,), generator=gen),
            torch.arange(size) % num_train)


def step_trial(module: L.LightningModule, batch_of: Callable[[int], Any],
               device: torch.device) -> Callable[[int], None]:
    """One forward and backward pass of ``module`` at a micro batch, as Lightning would run it
    (fit start hook, batch transfer hook, training step), on a copy in the memory format the
    speed options give it (not compiled: compiling a copy would cost a compile and change
    little of its memory): the module itself keeps its weights, batch-norm statistics and step
    state untouched."""
    def trial(micro: int) -> None:
        copy = deepcopy(module)
        speed.apply(copy, compile=False)  # the memory format the training will have
        copy = copy.to(device).train()
        try:
            copy.on_fit_start()
            batch = copy.on_after_batch_transfer(_to(batch_of(micro), device), 0)
            with warnings.catch_warnings():  # self.log outside a Trainer: nothing to log
                warnings.filterwarnings("ignore", message=".*self.log.*")
                copy.training_step(batch, 0).backward()
        finally:
            del copy
    return trial


def _to(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, dict):
        return {k: _to(v, device) for k, v in batch.items()}
    return tuple(t.to(device) for t in batch)
