"""The few collectives the stages need; each is a no-op in a single process."""

from __future__ import annotations

import torch
import torch.distributed as dist


def active() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if active():
        dist.barrier()


def _comm_device() -> torch.device:
    return (torch.device("cuda", torch.cuda.current_device())
            if active() and dist.get_backend() == "nccl" else torch.device("cpu"))


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum over ranks (returns a new tensor on t's device)."""
    if not active():
        return t
    buf = t.detach().to(_comm_device()).clone()
    dist.all_reduce(buf)
    return buf.to(t.device)


def assemble(values: torch.Tensor, ids: torch.Tensor, total: int) -> torch.Tensor:
    """Rows held by each rank (at global ids) -> the full tensor in id order, on every rank.

    Each row has exactly one contributor, so the sum is exact: identical on all ranks.
    """
    full = torch.zeros((total, *values.shape[1:]), dtype=values.dtype, device=values.device)
    full[ids.to(values.device)] = values
    return all_reduce_sum(full)


def broadcast_object(obj):
    if not active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
