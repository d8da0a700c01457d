"""Stage 0: surrogate features of the training set, clustered with K-means."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from tqdm import tqdm

from hpcue.config import RunConfig
from hpcue.data.loader import ShardDataset, make_loader, to_unit
from hpcue.data.shards import ShardSet
from hpcue.dist import collectives
from hpcue.dist.topology import current
from hpcue.models.classifier import Classifier
from hpcue.models.small_cnn import SmallCNN
from hpcue.models.surrogate import Surrogate
from hpcue.rundir import RunDir, atomic_write
from hpcue.stages.common import load_data, load_surrogate, loader, timed
from hpcue.trainer import make_trainer
from hpcue.uc.kmeans import kmeans, purity


def pretrain_small_surrogate(cfg: RunConfig, run: RunDir, data: ShardSet) -> Path:
    """Debugging mode has no ImageNet weights: train the small CNN on the data for a few epochs.

    Rank 0 trains it alone (seconds on a CPU) and the others wait: the surrogate, and so the
    clusters, are then the same for any world size.
    """
    def pretrain() -> None:
        model = Classifier(SmallCNN(len(data.classes)), lr=cfg.surrogate.pretrain_lr,
                           momentum=0.9, weight_decay=5e-4, augment=cfg.data.augment,
                           seed=cfg.seed)
        trainer = make_trainer(cfg.runtime, run, "surrogate", cfg.surrogate.pretrain_epochs,
                               this_rank_only=True)
        trainer.fit(model, make_loader(ShardDataset(data, "train", cache=cfg.data.cache),
                                       cfg.surrogate.pretrain_batch_size, shuffle=True,
                                       seed=cfg.seed, num_workers=cfg.data.num_workers))
        atomic_write(run.surrogate, lambda tmp: torch.save(model.model.state_dict(), tmp))

    collectives.on_main(pretrain, "pretraining the small surrogate")
    return run.surrogate


@torch.no_grad()
def extract_features(surrogate: Surrogate, batches,
                     device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """This rank's features and their global sample ids (each sample on exactly one rank)."""
    surrogate.to(device).eval()
    feats, ids = [], []
    for x, _, idx in tqdm(batches, desc="features", leave=False,
                          disable=not collectives.is_main()):
        feats.append(surrogate(to_unit(x.to(device))).cpu())
        ids.append(idx)
    return torch.cat(feats), torch.cat(ids)


def run_cluster(cfg: RunConfig, run: RunDir) -> Path:
    from sklearn.metrics import normalized_mutual_info_score

    record: dict = {}
    with timed(record):
        L.seed_everything(cfg.seed, workers=True, verbose=False)
        data = load_data(cfg, run)
        if cfg.surrogate.arch == "small_cnn" and cfg.surrogate.weights is None:
            pretrain_small_surrogate(cfg, run, data)
        surrogate = load_surrogate(cfg, run, len(data.classes))
        per_rank = max(1, cfg.train.global_batch_size // collectives.world_size())
        feats, ids = extract_features(
            surrogate, loader(cfg, data, "train", per_rank, train=False),
            torch.device(current().device))
        c, total = cfg.cluster, data.size("train")
        result = kmeans(feats, c.num_clusters, c.n_init, c.max_iter, c.tol, seed=cfg.seed,
                        ids=ids, total=total, reduce=collectives.all_reduce_sum)
        assignments = collectives.assemble(result.assignments, ids, total)
        state = {"centers": result.centers, "assignments": assignments}
        if collectives.is_main():
            atomic_write(run.clusters, lambda tmp: torch.save(state, tmp))
    labels = torch.from_numpy(data.labels("train"))
    record.update(
        num_images=total, feature_dim=int(feats.shape[1]), inertia=result.inertia,
        kmeans_iterations=result.n_iter,
        cluster_purity=round(purity(assignments, labels), 4),
        cluster_nmi=round(float(normalized_mutual_info_score(labels, assignments)), 4),
        cluster_sizes=torch.bincount(assignments, minlength=c.num_clusters).tolist(),
    )
    if collectives.is_main():
        run.write_record("cluster", record)
    collectives.barrier()
    return run.clusters
