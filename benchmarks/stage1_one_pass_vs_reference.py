"""Stage-1 throughput: hpcue's one-pass trainer against the reference scheme, side by side.

The reference UC code trains generator k on the WHOLE training set, one pass per generator: K
passes an epoch. hpcue trains all K generators in one pass, each on its own cluster's images.
Both are timed here on the same data, surrogate and generators, and reported as training-set
images per second of epoch progress (N images an epoch / seconds an epoch).

    python benchmarks/stage1_one_pass_vs_reference.py [--clusters 10] [--epochs 2]
"""

from __future__ import annotations

import argparse
import time

import torch

from hpcue.attacks.base import perturb
from hpcue.attacks.uc.objective import target_clusters, uc_loss
from hpcue.data.importers.digits import load_digits_splits
from hpcue.models.generator import ClusterGenerators
from hpcue.models.small_cnn import SmallCNN
from hpcue.models.surrogate import Surrogate


def one_pass_epoch(gens, surrogate, x, clusters, centers, batch, opt, k):
    for i in range(0, len(x), batch):
        xb, cb = x[i:i + batch], clusters[i:i + batch]
        loss = uc_loss(surrogate(perturb(xb, gens(), cb)), centers, target_clusters(cb, 1, k))
        opt.zero_grad()
        loss.backward()
        opt.step()


def reference_epoch(gens, surrogate, x, clusters, centers, batch, opts, k):
    for j, (g, z) in enumerate(zip(gens.generators, gens.noise, strict=True)):
        target = torch.full((batch,), (j + 1) % k)
        for i in range(0, len(x), batch):
            xb = x[i:i + batch]
            delta = g(z).clamp(-gens.epsilon, gens.epsilon)
            loss = uc_loss(surrogate((xb + delta).clamp(0, 1)), centers, target[:len(xb)])
            opts[j].zero_grad()
            loss.backward()
            opts[j].step()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clusters", type=int, default=10)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--batch", type=int, default=256, help="per-step batch (paper: 256)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x = load_digits_splits(args.image_size, 0.25, 0)["train"].as_float()
    k = args.clusters
    clusters = torch.arange(len(x)) % k
    surrogate = Surrogate(SmallCNN(10))
    with torch.no_grad():
        centers = torch.randn(k, surrogate(x[:2]).shape[1])

    def make():
        return ClusterGenerators(k, args.image_size, 16 / 255, width=16, blocks=2, seed=0)

    def one_pass(gens):
        opt = torch.optim.Adam(gens.parameters(), lr=1e-3)
        return lambda: one_pass_epoch(gens, surrogate, x, clusters, centers, args.batch, opt, k)

    def reference(gens):
        opts = [torch.optim.Adam(g.parameters(), lr=1e-3) for g in gens.generators]
        return lambda: reference_epoch(gens, surrogate, x, clusters, centers, args.batch, opts, k)

    rates = {}
    for name, scheme in (("one-pass (hpcue)", one_pass), ("reference (K passes)", reference)):
        step = scheme(make())
        step()  # warm-up epoch, not timed
        t0 = time.perf_counter()
        for _ in range(args.epochs):
            step()
        seconds = time.perf_counter() - t0
        rates[name] = len(x) * args.epochs / seconds
        print(f"{name:22s} {rates[name]:10.1f} images/s  ({seconds:.1f} s for {args.epochs} "
              f"epochs of {len(x)} images, K={k})")
    ratio = rates["one-pass (hpcue)"] / rates["reference (K passes)"]
    print(f"ratio one-pass / reference: {ratio:.2f}x (K = {k})")


if __name__ == "__main__":
    main()
