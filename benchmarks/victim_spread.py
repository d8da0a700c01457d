"""Victims spread over ranks against data-parallel victims, side by side in one run.

The real ``hpcue evaluate`` stage on two copies of one finished digits run, both on W ranks
under mpiexec: data-parallel (every rank trains every victim on its share of each batch, their
gradients all-reduced every step) and ``victim.spread`` (rank r trains victims r, r + W, ... on
the whole set alone, nothing exchanged until the results are gathered), and in one process for
reference. It prints each one's wall time and the speed-up of spreading.

    python benchmarks/victim_spread.py               # 2 CPU ranks, 12 victims
    python benchmarks/victim_spread.py --ranks 4 --seeds 4

The last line, for scripts: ``speedup X`` (data-parallel seconds over spread seconds).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

from launch import hpcue


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--seeds", type=int, default=4, help="victims per training set")
    ap.add_argument("--epochs", type=int, default=4)
    args = ap.parse_args()
    sets = [a for s in ["data.image_size=16", "surrogate.pretrain_epochs=2", "cluster.n_init=2",
                        "train.epochs=2", "train.generator_width=4", "train.generator_blocks=1",
                        f"victim.seeds={args.seeds}", f"victim.epochs={args.epochs}",
                        "victim.baselines=[random]", "victim.defenses=[]",
                        "runtime.timeout_s=300"] for a in ("--set", s)]
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "base"
        hpcue(["run", "--out", str(base), *sets], 1)
        seconds = {}
        for name, ranks, spread in (("one process", 1, False),
                                    (f"data-parallel, {args.ranks} ranks", args.ranks, False),
                                    (f"spread, {args.ranks} ranks", args.ranks, True)):
            run = Path(tmp) / name.replace(" ", "_").replace(",", "")
            shutil.copytree(base, run)
            start = time.perf_counter()
            hpcue(["evaluate", "--out", str(run), "--force", *sets,
                   "--set", f"victim.spread={str(spread).lower()}"], ranks, launcher="mpiexec")
            seconds[name] = time.perf_counter() - start
            record = json.loads((run / "stages" / "evaluate.json").read_text())
            print(f"  {name:<24} {seconds[name]:7.1f} s  (the stage's own: "
                  f"{record['seconds']:.1f} s; {record['victim_parallel']})")
    data, spread = (seconds[f"{k}, {args.ranks} ranks"] for k in ("data-parallel", "spread"))
    print(f"{3 * args.seeds} victims, {args.epochs} epochs: spreading them over {args.ranks} "
          f"ranks is {data / spread:.2f}x the data-parallel speed")
    print(f"speedup {data / spread:.3f}")


if __name__ == "__main__":
    main()
