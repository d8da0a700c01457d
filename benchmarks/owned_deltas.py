"""Sample-wise noise owned per rank against replicated, side by side in one run.

The real ``hpcue train`` stage with ``attack.name=em_samplewise`` on one clustered digits run
directory, in one process and on W ranks under mpiexec. Each rank holds only the deltas of the
images it owns (``OwnedBatches``: id mod W); replicating them instead would hold every image's
delta on every rank, and keep the replicas equal by summing each global batch's updated deltas
over the ranks after every batch. What each rank holds and moves comes from the stage records
(the model's gradient all-reduce, the same in both schemes, apart); the replicated figures are
what that scheme must hold and send at the same settings. Last, the same for the paper's data
sets at 224 px.

    python benchmarks/owned_deltas.py                  # 2 CPU ranks
    python benchmarks/owned_deltas.py --ranks 4 --image-size 32

The last line, for scripts: ``memory X traffic Y`` (owned over replicated bytes per rank held,
and moved for the deltas per global batch).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

from launch import hpcue, mib

#: training images of the paper's data sets (their train splits as hpcue prepares them)
PAPER_SETS = {"pets": 3680, "flowers102": 1020 + 1020, "pathmnist": 89996}




def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--image-size", type=int, default=16)
    ap.add_argument("--global-batch", type=int, default=64)
    args = ap.parse_args()
    sets = ["--set", f"data.image_size={args.image_size}", "--set", "surrogate.pretrain_epochs=2",
            "--set", "cluster.n_init=2", "--set", "attack.name=em_samplewise",
            "--set", "train.epochs=1", "--set", "attack.pgd_steps=2",
            "--set", f"train.global_batch_size={args.global_batch}",
            "--set", "runtime.timeout_s=120"]
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "base"
        hpcue(["cluster", "--out", str(base), *sets], 1, launcher="mpiexec")
        records = {}
        for ranks in (1, args.ranks):
            out = Path(tmp) / f"w{ranks}"
            shutil.copytree(base, out)
            hpcue(["train", "--out", str(out), *sets], ranks, launcher="mpiexec")
            records[ranks] = json.loads((out / "stages" / "train.json").read_text())
    one, many = records[1], records[args.ranks]
    full = one["delta_bytes_per_rank"]             # every image's delta: what replication holds
    n_images = round(full / (4 * (1 if one["perturbation_channels"] == 1 else 3)
                             * args.image_size ** 2))
    batch_bytes = args.global_batch * full / n_images  # one global batch's deltas
    print(f"digits at {args.image_size} px, {n_images} training images, global batch "
          f"{args.global_batch}, {args.ranks} ranks")
    print(f"  deltas held per rank: owned {mib(many['delta_bytes_per_rank'])}, replicated "
          f"{mib(full)}")
    print(f"  deltas moved per global batch: owned 0, replicated {mib(batch_bytes)} "
          f"(their all-reduce); once at the end, owned: {mib(many['gather_bytes'])} to rank 0")
    print(f"  model gradients per step (both): {mib(many['bytes_per_step'])}")
    print(f"  images/s: 1 process {one['images_per_second']}, {args.ranks} ranks "
          f"{many['images_per_second']}")
    for name, n in PAPER_SETS.items():
        whole = n * 3 * 224 * 224 * 4
        print(f"  {name} at 224 px: replicated {mib(whole)} per rank; owned on 16 ranks "
              f"{mib(whole / 16)}")
    print(f"memory {many['delta_bytes_per_rank'] / full:.3f} traffic 0.000")


if __name__ == "__main__":
    main()
