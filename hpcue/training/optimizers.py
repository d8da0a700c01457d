"""Stage 1's optimizers by name: AdamW, and the layer-wise adaptive LAMB and LARS of the
large-batch literature, from timm (not written again here).

LAMB (You et al., 2020) and LARS (You et al., 2017) scale each layer's step by the ratio of its
weight norm to its update norm, which is what lets very large batches train at a scaled lr.
Both come from ``timm.optim`` through ``create_optimizer_v2``, which exempts biases and
normalisation weights from weight decay and so, in timm, from the layer-wise adaptation (the
papers' practice). LAMB runs without timm's default global gradient clipping: the clipping is
NVIDIA's addition, not the paper's, and a global norm differs between ranks that each hold only
their own generators' gradients (``train.generator_parallel: shard``), where the per-layer trust
ratio does not.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from hpcue.training.speed import fused

#: ``train.optimizer``'s choices (config.py keeps its own copy: reading a config imports no torch)
OPTIMIZERS = ("adamw", "lamb", "lars")
#: LARS's momentum (SGD with momentum underneath, as in the LARS paper)
LARS_MOMENTUM = 0.9


def make_optimizer(name: str, module: torch.nn.Module, lr: float,
                   weight_decay: float) -> torch.optim.Optimizer:
    """``name``'s optimizer over ``module``'s parameters (AdamW fused into one kernel where
    ``runtime.fused_optimizer`` asks; timm's LAMB and LARS have no fused form)."""
    if name == "adamw":  # decoupled decay: it must not scale with a cluster's share of a batch
        return torch.optim.AdamW(module.parameters(), lr=lr, weight_decay=weight_decay,
                                 **fused(module.parameters()))
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}: one of {', '.join(OPTIMIZERS)}")
    from timm.optim import create_optimizer_v2

    extra = ({"max_grad_norm": None} if name == "lamb" else {"momentum": LARS_MOMENTUM})
    return create_optimizer_v2(module, opt=name, lr=lr, weight_decay=weight_decay,
                               filter_bias_and_bn=True, **extra)


def state_layout(optimizer: torch.optim.Optimizer,
                 params: Iterable[torch.Tensor]) -> list[list[tuple[str, tuple[int, ...], str]]]:
    """Each parameter's optimizer state as (key, shape, dtype) of its tensors, in key order:
    what a rank that never stepped a parameter creates before receiving its owner's state."""
    layout = []
    for p in params:
        state = optimizer.state.get(p, {})
        layout.append([(key, tuple(value.shape), str(value.dtype).removeprefix("torch."))
                       for key, value in sorted(state.items())
                       if isinstance(value, torch.Tensor)])
    return layout
