"""What the benchmarks share: the real CLI on 1 process or W ranks, and byte counts in MiB."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent


def hpcue(args: list[str], ranks: int, env: dict | None = None,
          launcher: str = "torchrun") -> None:
    """``hpcue ARGS`` in one process, or on ``ranks`` ranks under torchrun or mpiexec; exits
    with its stderr if it fails."""
    if ranks == 1:
        cmd = [sys.executable, "-m", "hpcue.cli", *args]
    elif launcher == "mpiexec":
        cmd = [str(BIN / "mpiexec"), "-n", str(ranks), str(BIN / "hpcue"), *args]
    else:
        cmd = [str(BIN / "torchrun"), "--standalone", "--nproc-per-node", str(ranks), "-m",
               "hpcue.cli", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"} if env is None else env
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")


def mib(n: float) -> str:
    return f"{n / 2**20:.2f} MiB"
