"""Stage 0: surrogate features of the training set, clustered with K-means."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from tqdm import tqdm

from hpcue.config import RunConfig
from hpcue.data.shards import ShardSet
from hpcue.models.classifier import Classifier
from hpcue.models.small_cnn import SmallCNN
from hpcue.models.surrogate import Surrogate
from hpcue.rundir import RunDir, atomic_write
from hpcue.stages.common import load_data, load_surrogate, loader, timed
from hpcue.trainer import make_trainer
from hpcue.uc.kmeans import kmeans, purity


def pretrain_small_surrogate(cfg: RunConfig, run: RunDir, data: ShardSet) -> Path:
    """Debugging mode has no ImageNet weights: train the small CNN on the data for a few epochs."""
    model = Classifier(SmallCNN(len(data.classes)), lr=cfg.surrogate.pretrain_lr, momentum=0.9,
                       weight_decay=5e-4, augment=cfg.data.augment)
    trainer = make_trainer(cfg.runtime, run, "surrogate", cfg.surrogate.pretrain_epochs)
    trainer.fit(model, loader(cfg, data, "train", cfg.surrogate.pretrain_batch_size, train=True))
    atomic_write(run.surrogate, lambda tmp: torch.save(model.model.state_dict(), tmp))
    return run.surrogate


@torch.no_grad()
def extract_features(surrogate: Surrogate, batches, device: torch.device) -> torch.Tensor:
    """Features in sample-id order (the evaluation loader reads each sample once, in order)."""
    surrogate.to(device).eval()
    feats = [surrogate(x.to(device)).cpu() for x, _, _ in tqdm(batches, desc="features",
                                                                 leave=False)]
    return torch.cat(feats)


def run_cluster(cfg: RunConfig, run: RunDir) -> Path:
    from sklearn.metrics import normalized_mutual_info_score

    record: dict = {}
    with timed(record):
        L.seed_everything(cfg.seed, workers=True, verbose=False)
        data = load_data(cfg, run)
        if cfg.surrogate.arch == "small_cnn" and cfg.surrogate.weights is None:
            pretrain_small_surrogate(cfg, run, data)
        surrogate = load_surrogate(cfg, run, len(data.classes))
        device = torch.device("cuda" if torch.cuda.is_available()
                              and cfg.runtime.accelerator != "cpu" else "cpu")
        feats = extract_features(
            surrogate, loader(cfg, data, "train", cfg.train.global_batch_size, train=False), device)
        c = cfg.cluster
        result = kmeans(feats, c.num_clusters, c.n_init, c.max_iter, c.tol, seed=cfg.seed)
        state = {"centers": result.centers, "assignments": result.assignments}
        atomic_write(run.clusters, lambda tmp: torch.save(state, tmp))
    labels = torch.from_numpy(data.labels("train"))
    record.update(
        num_images=len(labels), feature_dim=int(feats.shape[1]), inertia=result.inertia,
        kmeans_iterations=result.n_iter,
        cluster_purity=round(purity(result.assignments, labels), 4),
        cluster_nmi=round(float(normalized_mutual_info_score(labels, result.assignments)), 4),
        cluster_sizes=torch.bincount(result.assignments, minlength=c.num_clusters).tolist(),
    )
    run.write_record("cluster", record)
    return run.clusters
