"""Stage-1 scaling: the real ``hpcue train`` stage under torchrun with 1..N ranks.

Same per-rank batch at every size (weak scaling), one thread per rank on CPU; each run reads its
images/s from the stage record. Prints images/s, images/s per rank, and the scaling efficiency
(throughput at N ranks / (N x throughput at 1 rank)).

    python benchmarks/stage1_scaling.py                       # CPU: 1 and 2 ranks, digits
    python benchmarks/stage1_scaling.py --accelerator gpu --ranks 1 2 4 8 \\
        --set data.image_size=224 --set train.generator_width=64 --set train.generator_blocks=6
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from pathlib import Path

from launch import hpcue


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--per-rank-batch", type=int, default=256, help="paper: 256")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--accelerator", default="cpu", choices=("cpu", "gpu"))
    ap.add_argument("--set", dest="sets", action="append", default=[])
    args = ap.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    sets = [f"runtime.accelerator={args.accelerator}", f"train.epochs={args.epochs}",
            "data.num_shards=8", *args.sets]
    flags = [x for s in sets for x in ("--set", s)]
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "base"
        hpcue(["cluster", "--out", str(base), *flags], 1, env)
        rates = {}
        for n in args.ranks:
            run = Path(tmp) / f"r{n}"
            shutil.copytree(base, run)
            hpcue(["train", "--out", str(run), *flags, "--set",
                   f"train.global_batch_size={args.per_rank_batch * n}"], n, env)
            rates[n] = json.loads((run / "stages" / "train.json").read_text())["images_per_second"]
    one = rates[min(rates)] / min(rates)
    unit = "GPU" if args.accelerator == "gpu" else "rank"
    print(f"{'ranks':>5} {'images/s':>10} {'per ' + unit:>10} {'efficiency':>10}")
    for n, r in rates.items():
        print(f"{n:>5} {r:>10.1f} {r / n:>10.1f} {r / (n * one):>10.1%}")


if __name__ == "__main__":
    main()
