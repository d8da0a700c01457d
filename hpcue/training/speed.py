"""How a training uses a GPU's speed: the options that usually decide it (channels-last memory
format, ``torch.compile`` of a part, fused optimizers, pinned loader memory), resolved once per
command from ``runtime.*`` and kept here, as the topology is kept in ``distributed/topology.py``.

``auto`` means ``GPU_DEFAULTS`` on a GPU and off on a CPU. ``benchmarks/gpu_throughput.py``
measures each option side by side on stage 1's and the victims' real steps; an option becomes a
GPU default only once it measured faster there. None has run on a GPU yet, so none is on: a
default is a measured figure, not a hope. Every option changes float order at most, never the
method, so a run directory may be resumed under others (``stages/guard.py``, EXECUTION_ONLY),
and every stage record says which were on (``stages/provenance.py``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace

import torch
from lightning.pytorch.callbacks import Callback
from torch import nn

#: the parts ``runtime.compile`` may name (config.py keeps its own copy: no torch there)
COMPILE_PARTS = ("generator", "surrogate", "victim")


@dataclass(frozen=True)
class Speed:
    """One command's resolved options (every rank the same: each resolves the same config)."""

    channels_last: bool = False
    compile: tuple[str, ...] = ()
    fused_optimizer: bool = False
    pin_memory: bool = False

    def as_record(self) -> dict:
        return asdict(self) | {"compile": list(self.compile)}


#: what ``auto`` turns on on a GPU: only what benchmarks/gpu_throughput.py measured faster
#: there (nothing yet: no GPU has run it; its figures go in the README when one does)
GPU_DEFAULTS = Speed()

_ACTIVE: Speed | None = None


def resolve(channels_last: bool | str, compile_parts: Iterable[str] | str,
            fused_optimizer: bool | str, pin_memory: bool | str, on_gpu: bool) -> Speed:
    """The options as ``runtime.*`` sets them; each ``auto`` from ``GPU_DEFAULTS`` on a GPU,
    off on a CPU (where none of them is known to pay). Fused steps and pinned pages exist for
    GPUs only: on a CPU they are off whatever is asked, so the record says what ran."""
    base = GPU_DEFAULTS if on_gpu else Speed()

    def pick(value, default):
        return default if value == "auto" else value

    parts = base.compile if compile_parts == "auto" else tuple(compile_parts)
    return Speed(channels_last=pick(channels_last, base.channels_last),
                 compile=tuple(p for p in COMPILE_PARTS if p in parts),
                 fused_optimizer=pick(fused_optimizer, base.fused_optimizer) and on_gpu,
                 pin_memory=pick(pin_memory, base.pin_memory) and on_gpu)


def activate(speed: Speed) -> None:
    """Make ``speed`` this process's options (the pipeline does this once a command)."""
    global _ACTIVE
    _ACTIVE = speed


def current() -> Speed:
    """The active options; all off when nothing was activated (tests, notebooks)."""
    return _ACTIVE if _ACTIVE is not None else Speed()


def fused(params: Iterable[torch.Tensor]) -> dict:
    """The optimizer keyword that fuses its step into one kernel, where asked for and every
    parameter is on a GPU (torch's fused step is a CUDA kernel); else nothing."""
    if not current().fused_optimizer:
        return {}
    return {"fused": True} if all(p.is_cuda for p in params) else {}


def has_instance_norm(module: nn.Module) -> bool:
    """Whether ``module`` holds an instance norm (the generators do). Such a module stays in
    the standard format: on torch 2.14's CPU kernels, a channels-last gradient arriving at an
    instance norm's backward gives wrong gradients to everything before it (float64
    ``gradcheck`` of convolution, instance norm, channels-last convolution fails where the
    standard format passes; the generator's first convolution's gradient disagrees with a
    finite difference), and no GPU has shown otherwise yet."""
    return any(isinstance(m, nn.modules.instancenorm._InstanceNorm) for m in module.modules())


def prepare(module: nn.Module, part: str, speed: Speed) -> None:
    """``module`` in the memory format and compiled state ``speed`` asks for ``part``, in
    place (``nn.Module.compile`` keeps the state-dict keys, so checkpoints stay as they are);
    a module with an instance norm keeps its format (``has_instance_norm``)."""
    if part not in COMPILE_PARTS:
        raise ValueError(f"unknown part {part!r}: one of {', '.join(COMPILE_PARTS)}")
    if speed.channels_last and not has_instance_norm(module):
        module.to(memory_format=torch.channels_last)
    if part in speed.compile and module._compiled_call_impl is None:  # not twice (a test's fit)
        module.compile()


def apply(module: nn.Module, speed: Speed | None = None, *, compile: bool = True) -> None:
    """``speed`` (default: the active options) on every part ``module`` names in
    ``speed_parts`` (the frozen surrogate among them, no child of the module); a module without
    the hook is left as it is. ``compile=False``: the memory format alone (a micro-batch trial,
    whose copy would compile for nothing)."""
    speed = current() if speed is None else speed
    parts = getattr(module, "speed_parts", None)
    if parts is None or speed == Speed():
        return
    if not compile:
        speed = replace(speed, compile=())
    for part, modules in parts().items():
        for m in modules:
            prepare(m, part, speed)


class SpeedUp(Callback):
    """Applies the options (``apply``) to a training's module before the Trainer places it:
    the memory format then survives the move to the device, and DDP wraps and buckets the
    converted parameters. The fused step and pinned pages are not its: the optimizers
    (``fused``) and the stage's loaders read them."""

    def __init__(self, speed: Speed | None = None) -> None:
        self.speed = speed

    def setup(self, trainer, pl_module, stage: str) -> None:
        apply(pl_module, self.speed)
