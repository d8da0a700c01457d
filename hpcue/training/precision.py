"""The config's precision outside a Trainer: work Lightning does not run (feature extraction)
uses the same mixed precision as the trainings, through torch's autocast."""

from __future__ import annotations

from contextlib import AbstractContextManager

import torch

#: the autocast dtype of each mixed precision
MIXED_DTYPES = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}


def autocast(precision: str, device: torch.device) -> AbstractContextManager:
    """Autocast for ``precision`` on a GPU; a no-op for ``32-true`` and on CPUs (where the
    trainings also run in fp32 unless asked, and CPU autocast is slow)."""
    dtype = MIXED_DTYPES.get(precision)
    return torch.autocast(device.type, dtype=dtype,
                          enabled=dtype is not None and device.type == "cuda")


def resolve_deterministic(setting: bool | str, on_gpu: bool) -> bool | str:
    """``auto``: deterministic on CPUs, ``warn`` on GPUs (an op without a deterministic kernel
    warns instead of ending the run)."""
    if setting == "auto":
        return "warn" if on_gpu else True
    return setting
