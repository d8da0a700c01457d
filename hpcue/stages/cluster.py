"""Stage 0: surrogate features of the training set, clustered with K-means.

With ``cluster.shared`` set, clusters are computed once per cluster config (the slice of the
config they depend on, hashed: stages/provenance.py) and reused by every run that shares it, so
the points of a batch-size sweep all start from the same clusters.
"""

from __future__ import annotations

import errno
import shutil
import tempfile
from pathlib import Path

import torch
from tqdm import tqdm

from hpcue import console
from hpcue.attacks.uc.kmeans import kmeans
from hpcue.data.tensors import to_unit
from hpcue.distributed import collectives
from hpcue.errors import InputError
from hpcue.evaluation.metrics import nmi, purity
from hpcue.io import atomic_write, atomic_write_json, read_json
from hpcue.models.surrogate import Surrogate
from hpcue.stages import surrogates
from hpcue.stages.artifacts import Clusters, write_clusters
from hpcue.stages.context import StageContext
from hpcue.stages.provenance import file_digests
from hpcue.stages.rundir import RunDir
from hpcue.stages.slices import slice_digest
from hpcue.training.precision import autocast


@torch.no_grad()
def extract_features(surrogate: Surrogate, batches, device: torch.device,
                     precision: str = "32-true") -> tuple[torch.Tensor, torch.Tensor]:
    """This rank's features and their global sample ids (each sample on exactly one rank),
    computed in the run's precision and kept in fp32 for K-means."""
    surrogate.to(device).eval()
    feats, ids = [], []
    for x, _, idx in tqdm(batches, desc="features", leave=False,
                          disable=not collectives.is_main() or console.bars_off()):
        with autocast(precision, device):
            feats.append(surrogate(to_unit(x.to(device))).float().cpu())
        ids.append(idx)
    return torch.cat(feats), torch.cat(ids)


def shared_dir(ctx: StageContext) -> Path | None:
    """Where runs with this cluster config share their clusters (None: not shared)."""
    shared = ctx.cfg.cluster.shared
    return None if shared is None else Path(shared) / slice_digest(ctx.cfg, "cluster")


def _copy(src: RunDir, dst: RunDir, record: dict | None = None) -> None:
    """clusters.pt, the surrogate it was made with (debug mode) and the stage record."""
    src.require(src.clusters, "cluster")
    for name in ("clusters", "surrogate"):
        path = getattr(src, name)
        if path.is_file():
            atomic_write(getattr(dst, name), lambda tmp, path=path: shutil.copyfile(path, tmp))
    if record is not None:
        atomic_write_json(dst.stage_record("cluster"), record)


def _data_digest(ctx: StageContext) -> str:
    return file_digests({"data": ctx.data.root})["data"]


def reuse(ctx: StageContext, shared: Path) -> dict:
    """Rank 0 copies the shared clusters into this run; the record says where they came from.

    Prepared shards named by path (``data.shards``) must be the very files the shared clusters
    were made from: shards prepared again at the same path are refused, not silently reused.
    """
    record = read_json(RunDir(shared).stage_record("cluster"))
    made_from = record.pop("data_digest", None)
    if ctx.cfg.data.shards is not None and made_from not in (None, _data_digest(ctx)):
        raise InputError(f"{shared} holds clusters of other data than {ctx.cfg.data.shards} "
                         f"(its meta.json changed since): remove {shared} to cluster again")
    collectives.on_main(lambda: _copy(RunDir(shared), ctx.run),
                        f"copying the shared clusters from {shared}")
    for key in ("seconds", "config", "inputs"):  # this run's own, added by the pipeline
        record.pop(key, None)
    return record | {"reused_from": str(shared)}


def publish(ctx: StageContext, shared: Path, record: dict) -> None:
    """Rank 0 puts this run's clusters where other runs find them: written beside, renamed
    into place, so a reader never sees half of them; a run that published first wins (both
    were made from the same config)."""
    if not collectives.is_main():
        return
    shared.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{shared.name}.", suffix=".partial", dir=shared.parent))
    try:
        _copy(ctx.run, RunDir(tmp), record | {"data_digest": _data_digest(ctx)})
        tmp.rename(shared)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):  # not "published meanwhile"
            raise


def run(ctx: StageContext) -> dict:
    shared = shared_dir(ctx)
    # rank 0 decides, so no rank computes while another reuses (their collectives would differ)
    ready = shared is not None and collectives.on_main(
        lambda: RunDir(shared).stage_record("cluster").is_file(), f"looking at {shared}")
    if ready:
        return reuse(ctx, shared)
    record = compute(ctx)
    if shared is not None:
        publish(ctx, shared, record)
    return record


def compute(ctx: StageContext) -> dict:
    cfg, data = ctx.cfg, ctx.data
    surrogates.provide(ctx)
    feats, ids = extract_features(
        ctx.surrogate(), ctx.loader(data, "train", cfg.cluster.batch_size, train=False),
        torch.device(ctx.topology.device), cfg.runtime.precision)
    c, total = cfg.cluster, data.size("train")
    result = kmeans(feats, c.num_clusters, c.n_init, c.max_iter, c.tol, seed=cfg.cluster_seed,
                    ids=ids, total=total, reduce=collectives.all_reduce_sum)
    assignments = collectives.assemble(result.assignments, ids, total)
    if collectives.is_main():
        write_clusters(ctx.run, Clusters(result.centers, assignments))
    labels = torch.from_numpy(data.labels("train"))
    return dict(
        surrogate_pretraining=surrogates.surrogate_pretraining(ctx), num_images=total,
        surrogate_pretext=(cfg.surrogate.pretext
                           if surrogates.surrogate_pretraining(ctx) == "self_supervised"
                           else None),
        surrogate_origin=collectives.on_main(lambda: surrogates.origin(ctx),
                                             "describing the surrogate"),
        num_clusters=int(result.centers.shape[0]),
        feature_dim=int(feats.shape[1]), inertia=result.inertia, kmeans_iterations=result.n_iter,
        cluster_purity=round(purity(assignments, labels), 4),
        cluster_nmi=round(nmi(assignments, labels), 4),
        cluster_sizes=torch.bincount(assignments, minlength=c.num_clusters).tolist(),
    )
