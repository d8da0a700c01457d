"""The callbacks every hpcue training carries besides the Trainer's own: a throughput meter, a
stop on a non-finite loss, hpcue's SIGTERM handler, and the epoch checkpoint.

Apart from ``trainer.py`` (which builds the Trainer and adds them) so each reads on its own: what
it watches and why, not how a Trainer is put together.
"""

from __future__ import annotations

import signal
import threading
import time

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from hpcue.errors import NonFiniteError


class Throughput(Callback):
    """Images per second over training epochs only (no setup, no validation)."""

    def __init__(self) -> None:
        self.images = 0
        self.seconds = 0.0
        self._t0 = 0.0

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.images += len(batch[0]) * trainer.world_size

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.seconds += time.perf_counter() - self._t0

    # kept in epoch checkpoints, so a resumed training reports the whole training's rate
    def state_dict(self) -> dict:
        return {"images": self.images, "seconds": self.seconds}

    def load_state_dict(self, state: dict) -> None:
        self.images, self.seconds = state["images"], state["seconds"]

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0


class FiniteLoss(Callback):
    """Stop a training whose loss is NaN or infinite, naming it, the epoch and the step.

    A diverged stage 1 would otherwise publish black images and a diverged victim would score
    chance: both read as excellent protection. Parameters are the same on every rank after an
    all-reduced step, so a diverged model stops every rank at the same step.
    """

    def __init__(self, name: str) -> None:
        self.name = name

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if isinstance(loss, torch.Tensor) and not bool(torch.isfinite(loss).all()):
            raise NonFiniteError(f"training {self.name!r}: the loss became {float(loss)} at "
                                 f"epoch {trainer.current_epoch}, step {batch_idx}: it diverged; "
                                 f"lower its lr (or raise its warmup) and rerun")


class OwnSignals(Callback):
    """hpcue's SIGTERM handler during training, not Lightning's.

    Lightning's handler broadcasts from inside the signal handler, on whatever rank the signal
    reaches, in the middle of whatever collective that rank is in: the other ranks then pair it
    with their own next collective (a sharded step has several) and fail or hang. hpcue's
    handler stops each rank where it stands, and a run resumes from its last epoch checkpoint.
    """

    def __init__(self) -> None:
        self.handler = signal.getsignal(signal.SIGTERM)  # set by the CLI before any Trainer

    def on_train_start(self, trainer, pl_module) -> None:
        if callable(self.handler) and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self.handler)  # Lightning restores its own at the end


class EveryEpochCheckpoint(ModelCheckpoint):
    """Lightning's ModelCheckpoint, saved at the end of every epoch even when the epoch took no
    optimizer step (Lightning skips a save at an unchanged global step): an attack's epoch may
    move only its noise (Bayes error's features and ascent epochs, AAP's crafting pass), and a
    run stopped after it must resume after it, not redo it from an older checkpoint."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._epoch_saved = -1

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if (self._last_global_step_saved == trainer.global_step
                and self._epoch_saved != trainer.current_epoch):
            self._last_global_step_saved = -1  # a new epoch: not "already saved"
        super().on_train_epoch_end(trainer, pl_module)
        self._epoch_saved = trainer.current_epoch
