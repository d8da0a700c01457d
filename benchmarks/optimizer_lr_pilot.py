"""The learning-rate pilot behind the batch-size study's LAMB and LARS lines.

    python benchmarks/optimizer_lr_pilot.py --out /tmp/pilot           # the digits study's grid
    python benchmarks/optimizer_lr_pilot.py --out DIR --config C.yaml --set data.shards=...

For each (optimizer, lr) of the grid, one `hpcue run` at the config's base batch with the
victims cut to the least (one seed, no baselines, no defenses: only stage 1's loss is read),
then a table of the final stage-1 loss (``final_uc_loss`` of ``stages/train.json``). The rule
the digits study used: each optimizer's lr with the lowest final loss, on a seed no study point
uses (100), chosen before the study ran. One seed per lr: differences of a few 1e-4 are ties.
Not a speed benchmark: seconds are printed as they were, beside whatever else ran.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

#: the digits study's grid (docs/batch-study.md)
GRID = [("adamw", 0.003), ("lamb", 0.003), ("lamb", 0.01), ("lamb", 0.03), ("lamb", 0.1),
        ("lars", 0.3), ("lars", 1.0), ("lars", 3.0)]
#: the study's split and clusters, a seed no study point uses, the victims cut to the least
FIXED = ["seed=100", "data.split_seed=0", "cluster.seed=0", "victim.epochs=1",
         "victim.seeds=1", "victim.baselines=[]", "victim.defenses=[]"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="a folder for the runs")
    parser.add_argument("--config", help="a run config (default: the embedded digits)")
    parser.add_argument("--set", dest="sets", action="append", default=[],
                        metavar="KEY=VALUE", help="another override (repeatable)")
    args = parser.parse_args()
    rows = []
    for optimizer, lr in GRID:
        out = args.out / f"{optimizer}-{lr:g}"
        cmd = [sys.executable, "-m", "hpcue.cli", "run", "-q", "--out", str(out)]
        cmd += ["--config", args.config] if args.config else []
        for item in [*FIXED, *args.sets, f"train.optimizer={optimizer}", f"train.lr={lr}"]:
            cmd += ["--set", item]
        start = time.monotonic()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        record = json.loads((out / "stages" / "train.json").read_text())
        rows.append((optimizer, lr, record["final_uc_loss"], time.monotonic() - start))
        print(f"{optimizer:6s} lr {lr:<6g} final stage-1 loss {rows[-1][2]:.4f} "
              f"({rows[-1][3]:.0f} s)", flush=True)
    for optimizer in dict.fromkeys(o for o, _ in GRID):
        best = min((r for r in rows if r[0] == optimizer), key=lambda r: r[2])
        print(f"lowest final loss, {optimizer}: lr {best[1]:g} ({best[2]:.4f})")


if __name__ == "__main__":
    main()
