"""Atomic writes, the ground floor: a file is either complete under its name or not there.

Every result file (configs, shards, records, checkpoints of results, reports) is written under
a temporary name beside its destination and renamed when complete, so an interrupted write never
leaves a file that a later stage or rerun would trust.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import math
import os
import socket
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hpcue.errors import BusyError, DiskFullError, InputError, NonFiniteError


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()  # read once: setting it is process-wide, not safe beside other threads


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it into place.

    A full disk (or quota) is one DiskFullError naming ``path``, with the temporary removed, so
    a failed write never keeps the disk full. ``write`` should produce the bytes in memory and
    write them with plain file I/O: libraries that write through their own C code (HDF5) may
    crash on a full disk instead of raising.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise _disk_full(exc, path) from None
    os.close(fd)
    try:
        write(Path(tmp))
        # mkstemp creates 0600; a result file gets the mode any other new file would get
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise _disk_full(exc, path) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _disk_full(exc: OSError, path: Path) -> OSError:
    """ENOSPC/EDQUOT as a DiskFullError naming the path; any other OSError as it was."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskFullError(exc.errno, f"no space left writing {path} "
                                        f"({os.strerror(exc.errno)}): free space on its file "
                                        f"system and rerun; nothing half-written was kept")
    return exc


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text))


def non_finite(data: Any, where: str = "") -> list[str]:
    """The keys (dotted) of every NaN or infinite float in a JSON-like structure."""
    if isinstance(data, float):
        return [] if math.isfinite(data) else [where or "(value)"]
    if isinstance(data, dict):
        items = data.items()
    elif isinstance(data, list | tuple):
        items = enumerate(data)
    else:
        return []
    return [k for key, value in items
            for k in non_finite(value, f"{where}.{key}" if where else str(key))]


def atomic_write_json(path: Path, data: Any) -> None:
    """JSON without NaN or Infinity (not JSON, and never a result): one NonFiniteError naming
    the keys instead."""
    bad = non_finite(data)
    if bad:
        raise NonFiniteError(f"{path}: not written, these values are NaN or infinite: "
                             f"{', '.join(bad[:8])}{' ...' if len(bad) > 8 else ''}")
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False, allow_nan=False) + "\n")


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def read_json(path: Path) -> Any:
    """A JSON file hpcue wrote; a damaged one (or one holding NaN or Infinity, which hpcue
    never writes) is one InputError naming it."""
    path = Path(path)
    try:
        return json.loads(path.read_text(), parse_constant=_refuse_constant)
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
        raise InputError(f"{path}: not valid JSON ({exc}); remove it or rerun the step that "
                         f"writes it") from None


@contextmanager
def exclusive(path: Path, what: str) -> Iterator[None]:
    """Hold an advisory lock on ``path`` (created) while the block runs; a second holder gets
    one BusyError naming the first one's host and pid.

    A file system without working locks (some parallel file systems mount without them) is
    not a reason to refuse a run: the lock is then skipped.
    """
    path = Path(path)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666 & ~_UMASK)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 256, 0).decode(errors="replace").strip() or "another process"
            raise BusyError(f"{what} is in use by {holder} (lock {path}): wait for it to end, "
                            f"or use another --out") from None
        except OSError as exc:
            if exc.errno not in (errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
                raise
        else:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"hpcue on {socket.gethostname()}, pid {os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)


def file_sha256(path: Path) -> str:
    """The sha256 of a file, read a MiB at a time (shards, weights: files are checked, not
    trusted)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
