"""Stage 1, generator sharding against replication, side by side in one run.

The real ``hpcue train`` stage under torchrun, paper-width generators (width 64, 6 blocks) at
64 px, K = 10, per-rank batch 8 and 32, each mode on a copy of one clustered run directory.
Images per second come from the stage record (whole epochs, the shard's once-an-epoch gather
of every generator included); bytes are the payload of the collectives each rank joins per
optimizer step (replicate: DDP's all-reduce of every generator gradient; shard: the deltas'
gather and their gradients' all-reduce), with the epoch's gather apart.

    python benchmarks/stage1_generator_parallel.py            # 2 CPU ranks, one thread each
    python benchmarks/stage1_generator_parallel.py --gpus 4   # a GPU node: one rank per GPU

The last line, for scripts: ``speedup X bytes Y`` (X: shard over replicate images per second
at the first per-rank batch; Y: shard over replicate bytes per optimizer step there, ``n/a``
on one rank, where nothing is communicated).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from pathlib import Path

from launch import hpcue, mib

MODES = ("replicate", "shard")




def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ranks", type=int, default=2, help="CPU ranks (default 2)")
    ap.add_argument("--gpus", type=int, default=0, help="run on GPUs, one rank each")
    ap.add_argument("--per-rank-batch", type=int, nargs="+", default=[8, 32])
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--blocks", type=int, default=6)
    ap.add_argument("--clusters", type=int, default=10)
    ap.add_argument("--train-images", type=int, default=256,
                    help="training images (digits); an epoch at the first per-rank batch is "
                         "this / (batch x ranks) steps")
    ap.add_argument("--set", dest="sets", action="append", default=[])
    args = ap.parse_args()
    ranks = args.gpus or args.ranks
    env = {**os.environ}
    if not args.gpus:
        env["OMP_NUM_THREADS"] = "1"
    test_fraction = 1 - args.train_images / 1797  # digits: 1797 images
    sets = [f"runtime.accelerator={'gpu' if args.gpus else 'cpu'}", "train.epochs=1",
            f"data.image_size={args.image_size}", f"data.test_fraction={test_fraction:.4f}",
            f"cluster.num_clusters={args.clusters}", "cluster.n_init=1",
            "surrogate.pretrain_epochs=1", f"train.generator_width={args.width}",
            f"train.generator_blocks={args.blocks}", "data.augment=none", *args.sets]
    flags = [x for s in sets for x in ("--set", s)]
    records: dict[tuple[int, str], dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "base"
        hpcue(["cluster", "--out", str(base), *flags], 1, env)
        for batch in args.per_rank_batch:
            for mode in MODES:
                run = Path(tmp) / f"{mode}-{batch}"
                shutil.copytree(base, run)
                hpcue(["train", "--out", str(run), *flags,
                       "--set", f"train.global_batch_size={batch * ranks}",
                       "--set", f"train.generator_parallel={mode}"], ranks, env)
                records[batch, mode] = json.loads((run / "stages" / "train.json").read_text())
    unit = "GPUs" if args.gpus else "CPU ranks"
    print(f"stage 1 on {ranks} {unit}: K={args.clusters}, generators {args.width} wide, "
          f"{args.blocks} blocks, {args.image_size} px")
    print(f"{'per-rank batch':>14} {'mode':>9} {'images/s':>9} {'steps/epoch':>11} "
          f"{'bytes/step':>12} {'epoch gather':>12}")
    for (batch, mode), r in records.items():
        print(f"{batch:>14} {mode:>9} {r['images_per_second']:>9.2f} "
              f"{r['batch_plan']['optimizer_steps_per_epoch']:>11} "
              f"{mib(r['bytes_per_step']):>12} {mib(r['sync_bytes_per_epoch']):>12}")
    for batch in args.per_rank_batch:
        speed, ratio = compare(records[batch, "replicate"], records[batch, "shard"])
        print(f"per-rank batch {batch}: shard/replicate images/s {speed}x, bytes/step {ratio}")
    if ranks == 1:
        print("(one rank: nothing is communicated, and both modes do the same work)")
    speed, ratio = compare(*(records[args.per_rank_batch[0], m] for m in MODES))
    print(f"speedup {speed} bytes {ratio}")


def compare(replicate: dict, shard: dict) -> tuple[str, str]:
    """Shard over replicate: images per second, and bytes per step (n/a in one rank)."""
    speed = f"{shard['images_per_second'] / replicate['images_per_second']:.2f}"
    sent = replicate["bytes_per_step"]
    return speed, f"{shard['bytes_per_step'] / sent:.4f}" if sent else "n/a"


if __name__ == "__main__":
    main()
