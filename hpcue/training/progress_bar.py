"""The progress display of every hpcue training: a bar on a terminal, a line an epoch elsewhere.

On its own because it is display, not training (none under ``-q``), and because it subclasses
Lightning's progress bars and reaches into its tqdm module (``Tqdm``, ``convert_inf``): a
Lightning upgrade that moves those breaks this file alone.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import torch
from lightning.pytorch.callbacks import ProgressBar, TQDMProgressBar
from lightning.pytorch.callbacks.progress.tqdm_progress import Tqdm, convert_inf


class LabelledBar(TQDMProgressBar):
    """One bar per training, named for what it trains (``surrogate: epoch 3/15``): a run has
    up to four trainings and Lightning's own bar says only ``Epoch 3``. Validation and test
    passes (the victims' accuracy every epoch) get no bar of their own."""

    def __init__(self, label: str, refresh_rate: int) -> None:
        super().__init__(refresh_rate=refresh_rate)
        self.label = label

    @property
    def train_description(self) -> str:
        return self.label

    def on_train_epoch_start(self, trainer, *args) -> None:
        # Lightning's own, but for the description (its "Epoch N" would be printed first)
        bar = self.train_progress_bar
        bar.set_description(f"{self.label}: epoch {trainer.current_epoch + 1}/"
                            f"{trainer.max_epochs}", refresh=False)
        bar.reset(convert_inf(self.total_train_batches))
        bar.initial = 0

    def init_validation_tqdm(self) -> Tqdm:
        return Tqdm(disable=True)

    def init_test_tqdm(self) -> Tqdm:
        return Tqdm(disable=True)


def batch_images(batch: Any) -> int | None:
    """The images in a batch of (images, labels, ids), or in a mapping of such batches (the
    victims' training sets); None for a batch of another shape."""
    if isinstance(batch, Mapping):
        counts = [batch_images(part) for part in batch.values()]
        return None if not counts or None in counts else sum(counts)
    first = batch[0] if isinstance(batch, (list, tuple)) and batch else None
    return len(first) if isinstance(first, torch.Tensor) else None


class EpochLines(ProgressBar):
    """A batch log's progress (a file or a pipe, not a terminal): one plain ASCII line an epoch,
    ``surrogate: epoch 3/15, train_loss 0.412, 830 images/s``. A bar there would keep every
    redraw, joined by carriage returns, and a job killed mid-write could cut one of its
    multi-byte blocks in half. The metrics are those the bar shows, the epoch's mean (Lightning
    has aggregated them when ``on_train_epoch_end`` runs), not its last step's."""

    def __init__(self, label: str) -> None:
        super().__init__()
        self.label = label
        self._shown = True
        self._images: int | None = 0
        self._t0 = 0.0

    def disable(self) -> None:  # every rank but 0 (Lightning's setup calls it)
        self._shown = False

    def enable(self) -> None:
        self._shown = True

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._images, self._t0 = 0, time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        n = batch_images(batch)
        self._images = None if n is None or self._images is None else self._images + n

    def epoch_line(self, trainer, pl_module) -> str:
        """The line of the epoch that just ended."""
        parts = [f"{self.label}: epoch {trainer.current_epoch + 1}/{trainer.max_epochs}"]
        for key, value in self.get_metrics(trainer, pl_module).items():
            if key == "v_num" or key.endswith("_step"):  # the run's version; one step's loss
                continue
            shown = f"{value:.4g}" if isinstance(value, float) else str(value)
            parts.append(f"{key.removesuffix('_epoch')} {shown}")
        seconds = time.perf_counter() - self._t0
        if self._images and seconds > 0:
            parts.append(f"{self._images * trainer.world_size / seconds:.0f} images/s")
        return ", ".join(parts).encode("ascii", "replace").decode("ascii")

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self._shown:
            print(self.epoch_line(trainer, pl_module), flush=True)
