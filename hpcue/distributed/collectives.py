"""The few collectives the stages need; each is a no-op in a single process."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import TypeVar

import torch
import torch.distributed as dist

from hpcue.errors import HpcueError

T = TypeVar("T")
_LONG_WAIT: dist.ProcessGroup | None = None


class PeerError(HpcueError, RuntimeError):
    """Another rank failed at work this one depends on; this one stops with its message."""


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


def _on_comm_device(t: torch.Tensor, op: Callable[[torch.Tensor], object]) -> torch.Tensor:
    """``op`` on a copy of ``t`` on the process group's device; the result on t's device."""
    if not active():
        return t
    buf = t.detach().to(_comm_device()).clone()
    op(buf)
    return buf.to(t.device)


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum over ranks (returns a new tensor on t's device)."""
    return _on_comm_device(t, dist.all_reduce)


def broadcast_tensor(t: torch.Tensor, src: int = 0) -> torch.Tensor:
    """Rank ``src``'s ``t`` on every rank (returns a new tensor on t's device)."""
    return _on_comm_device(t, lambda buf: dist.broadcast(buf, src=src))


def any_rank(flag: bool) -> bool:
    """True on every rank when ``flag`` is True on any of them."""
    return bool(all_reduce_sum(torch.tensor([float(flag)]))[0] > 0)


def assemble(values: torch.Tensor, ids: torch.Tensor, total: int) -> torch.Tensor:
    """Rows held by each rank (at global ids) -> the full tensor in id order, on every rank.

    Each row has exactly one contributor, so the sum is exact: identical on all ranks.
    """
    full = torch.zeros((total, *values.shape[1:]), dtype=values.dtype, device=values.device)
    full[ids.to(values.device)] = values
    return all_reduce_sum(full)


def gather_rows(values: torch.Tensor, ids: torch.Tensor, total: int) -> torch.Tensor | None:
    """Rows held by each rank (at global ids) -> the full tensor in id order on rank 0 alone
    (None elsewhere): no rank but 0 ever holds more than its own rows plus one rank's
    padding. Ranks may hold different numbers of rows (each is padded to the largest)."""
    if not active():
        full = torch.zeros((total, *values.shape[1:]), dtype=values.dtype, device=values.device)
        full[ids.to(values.device)] = values
        return full
    device = _comm_device()
    counts = all_reduce_sum(torch.zeros(world_size(), dtype=torch.long).index_fill_(
        0, torch.tensor([rank()]), len(ids)))
    most = int(counts.max())
    rows = torch.zeros((most, *values.shape[1:]), dtype=values.dtype, device=device)
    rows[:len(ids)] = values.to(device)
    where = torch.full((most,), -1, dtype=torch.long, device=device)
    where[:len(ids)] = ids.to(device)
    row_parts = [torch.empty_like(rows) for _ in range(world_size())] if is_main() else None
    id_parts = [torch.empty_like(where) for _ in range(world_size())] if is_main() else None
    dist.gather(rows, row_parts, dst=0)
    dist.gather(where, id_parts, dst=0)
    if not is_main():
        return None
    assert row_parts is not None and id_parts is not None
    full = torch.zeros((total, *values.shape[1:]), dtype=values.dtype, device=device)
    for part, at in zip(row_parts, id_parts, strict=True):
        keep = at >= 0
        full[at[keep]] = part[keep]
    return full.to(values.device)


def gather_objects(obj, long_wait: bool = True) -> list:
    """Every rank's ``obj``, in rank order, on every rank (pickled; small records only).
    ``long_wait``: on the group that waits ``setup_timeout_s`` (setup and records); False: on
    the default group, as the training's own collectives (inside a training step, where a
    stopped run must not leave the other group mid-collective)."""
    if not active():
        return [obj]
    seen: list = [None] * world_size()
    dist.all_gather_object(seen, obj, group=long_wait_group() if long_wait else None)
    return seen


def broadcast_object(obj, group: dist.ProcessGroup | None = None):
    """Rank 0's ``obj`` on every rank (pickled; for decisions and small records)."""
    if not active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0, group=group)
    return box[0]


def init_long_wait_group(timeout_s: float) -> None:
    """A gloo group with its own, longer timeout, for ranks that wait while rank 0 works alone.

    Collective calls within the job keep the short timeout that catches a dead rank quickly.
    """
    global _LONG_WAIT
    _LONG_WAIT = dist.new_group(backend="gloo", timeout=timedelta(seconds=timeout_s))


def long_wait_group() -> dist.ProcessGroup | None:
    return _LONG_WAIT


def on_main(work: Callable[[], T], what: str) -> T:
    """Run ``work`` on rank 0 alone and return its result on every rank.

    The others wait (up to runtime.setup_timeout_s). If it fails, rank 0 raises its own error
    and every other rank a PeerError naming it, so each process ends with one clear line
    instead of a timeout or a traceback. The result must pickle (decisions, paths, flags).
    """
    result, error = None, None
    if is_main():
        try:
            result = work()
        except Exception as exc:  # every kind: the other ranks must hear of it
            error = exc
    outcome = broadcast_object((result, None if error is None else str(error)),
                               group=_LONG_WAIT)
    if error is not None:
        raise error
    if outcome[1] is not None:
        raise PeerError(f"rank 0 failed while {what}: {outcome[1]}")
    return outcome[0]


def raise_if_any(error: Exception | None, what: str) -> None:
    """Every rank says whether its part of ``what`` failed; any failure ends every rank.

    Called where ranks work on different files, so that one rank's bad shard is one clear
    error everywhere instead of the others waiting in the next collective until the timeout.
    """
    mine = None if error is None else str(error)
    messages: list = [mine]
    if active():
        messages = [None] * world_size()
        dist.all_gather_object(messages, mine)
    if error is not None:
        raise error
    failed = [(r, m) for r, m in enumerate(messages) if m is not None]
    if failed:
        r, message = failed[0]
        raise PeerError(f"rank {r} failed while {what}: {message}")
