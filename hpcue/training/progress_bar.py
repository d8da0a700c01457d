"""The progress bar of every hpcue training.

On its own because it is display, not training (shown unless ``console`` turns bars off), and
because it subclasses Lightning's tqdm bar and reaches into its module (``Tqdm``,
``convert_inf``): a Lightning upgrade that moves those breaks this file alone.
"""

from __future__ import annotations

from lightning.pytorch.callbacks import TQDMProgressBar
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
