"""One Trainer factory for every training hpcue runs, so topology and logging live in one place."""

from __future__ import annotations

import sys
import warnings
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.overrides.distributed import _sync_module_states
from lightning.pytorch.strategies import DDPStrategy

from hpcue import console
from hpcue.distributed import collectives
from hpcue.distributed.lightning_env import trainer_environment
from hpcue.distributed.topology import current
from hpcue.errors import InputError
from hpcue.training.callbacks import EveryEpochCheckpoint, FiniteLoss, OwnSignals
from hpcue.training.progress_bar import EpochLines, LabelledBar
from hpcue.training.speed import SpeedUp

# Lightning's advice on worker counts and small logging intervals is noise for tiny debug runs.
warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
warnings.filterwarnings("ignore", message=r".*training batches.*smaller than the logging.*")
# epoch metrics are progress display only; results are all-reduced explicitly where they count
warnings.filterwarnings("ignore", message=r".*recommended to use `self.log\(.*sync_dist=True.*")


@dataclass(frozen=True)
class TrainerSettings:
    """The runtime settings every Trainer takes (``runtime.*`` in the config)."""

    precision: str
    deterministic: bool
    timeout_s: float


def resume_path(checkpoints: Path) -> str | None:
    """The last epoch checkpoint in ``checkpoints``, if an earlier attempt stopped mid-training.

    Rank 0 looks and tells the others, so all ranks resume from the same point or none does.
    """
    last = Path(checkpoints) / "last.ckpt"
    path = collectives.broadcast_object(str(last) if last.is_file() else None)
    if path is not None:
        check_checkpoint(Path(path))
    return path


def check_checkpoint(path: Path) -> None:
    """An epoch checkpoint loads as weights only (never code), before Lightning resumes from it
    (fit's ``weights_only=True`` then loads it the same way): a damaged or crafted file is one
    InputError naming it."""
    try:
        torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many kinds for a damaged or unsafe file
        first = str(exc).split(". ")[0].splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"{path}: not an epoch checkpoint hpcue can load as weights only "
                         f"({first}); delete it to start that training afresh") from None


def _log_version(checkpoints: Path, logs: Path) -> str:
    """``<logs>/metrics.csv`` for a first attempt; a resumed one writes its epochs to
    ``<logs>/resumed-N/`` instead of overwriting the epochs logged before the stop."""
    if not (Path(checkpoints) / "last.ckpt").is_file():
        return ""
    return f"resumed-{len(list(Path(logs).glob('resumed-*'))) + 1}"


class UnwrappedDDP(DDPStrategy):
    """DDP's process group, device placement and collectives without the DDP wrapper: for a
    module that reduces what it needs itself (sharded generators), so no parameter gradient
    is all-reduced behind its back. Like DDP, it starts every rank from rank 0's weights."""

    def configure_ddp(self) -> None:
        _sync_module_states(self.model)


def make_trainer(settings: TrainerSettings, checkpoints: Path, logs: Path, name: str,
                 epochs: int, callbacks: list[Callback] | None = None, accumulate: int = 1,
                 this_rank_only: bool = False, label: str | None = None,
                 wrap: bool = True, max_steps: int | None = None) -> L.Trainer:
    """DDP over the process group the launcher set up (NCCL on GPUs, gloo on CPU), or plain.

    Epoch checkpoints go to ``checkpoints``, CSV metrics to ``logs/<name>/``; the progress bar
    (a plain line an epoch when stdout is not a terminal) says ``label`` (default: ``name``),
    and there is none under ``-q``. ``wrap=False``: the module does its own reductions
    (UnwrappedDDP). ``max_steps``: training ends after that many optimizer steps even within
    ``epochs`` (a fixed number of steps; None: the epochs decide).

    Batch norm is synchronised across ranks on GPUs, so a global batch behaves as in one
    process; torch has no SyncBatchNorm on CPU, where each rank normalises its own part.
    """
    topo = current()
    on_gpu = topo.device.startswith("cuda")
    distributed = topo.distributed and not this_rank_only
    # hpcue's own environment in every Trainer: Lightning's detection would import mpi4py.
    # It goes in the strategy or in the plugins, never both.
    env = trainer_environment(topo, distributed)
    strategy: DDPStrategy | str = "auto"  # one process: Lightning's single-device strategy
    plugins = [env]
    if distributed:
        kind = DDPStrategy if wrap else UnwrappedDDP
        strategy = kind(cluster_environment=env, process_group_backend=topo.backend,
                        timeout=timedelta(seconds=settings.timeout_s))
        plugins = []
    display: list[Callback] = []  # -q: none
    if console.level() > console.QUIET:  # a live bar on a terminal, else a line an epoch
        display = [EpochLines(label or name) if console.bars_off(sys.stdout)
                   else LabelledBar(label or name, refresh_rate=1)]
    return L.Trainer(
        max_epochs=epochs,
        max_steps=-1 if max_steps is None else max_steps,
        accelerator="gpu" if on_gpu else "cpu",
        devices=[int(topo.device.split(":")[1])] if on_gpu else 1,
        num_nodes=topo.world_size if distributed else 1,
        strategy=strategy,
        plugins=plugins,
        sync_batchnorm=distributed and on_gpu,
        accumulate_grad_batches=accumulate,
        precision=settings.precision,
        deterministic=settings.deterministic,
        logger=CSVLogger(logs, name=name, version=_log_version(checkpoints, Path(logs) / name)),
        enable_progress_bar=bool(display),
        callbacks=[*display,
                   # every epoch: a run stopped by its wall time resumes from the last one
                   EveryEpochCheckpoint(dirpath=checkpoints, save_last=True,
                                        save_top_k=1, every_n_epochs=1),
                   FiniteLoss(name), OwnSignals(), SpeedUp(),
                   *(callbacks or [])],
        enable_model_summary=False,
        log_every_n_steps=5,
        num_sanity_val_steps=0,
        use_distributed_sampler=False,  # hpcue's RankSampler already shards by rank
    )
