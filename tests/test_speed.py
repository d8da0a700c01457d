"""The speed options (training/speed.py): how ``runtime.*`` resolves on each device, what they
do to a training's parts, that they change float order at most, and that a run directory may be
resumed under others."""

from __future__ import annotations

import copy

import pytest
import torch
from torchvision.models import resnet18

from hpcue import config
from hpcue.attacks.uc.module import UCModule
from hpcue.config import load_config
from hpcue.errors import ConfigError
from hpcue.models.generator import ClusterGenerators
from hpcue.models.surrogate import IMAGENET_MEAN, IMAGENET_STD, Surrogate
from hpcue.stages.guard import changed_keys
from hpcue.stages.slices import flat_config
from hpcue.training import speed
from hpcue.training.speed import GPU_DEFAULTS, Speed, SpeedUp


def test_auto_is_off_on_cpus_and_the_measured_defaults_on_gpus():
    assert speed.resolve("auto", "auto", "auto", "auto", on_gpu=False) == Speed()
    assert speed.resolve("auto", "auto", "auto", "auto", on_gpu=True) == GPU_DEFAULTS
    asked = speed.resolve(True, ["surrogate", "generator"], True, True, on_gpu=True)
    # parts in one order whatever the config's; fused steps and pinned pages only on a GPU
    assert asked == Speed(True, ("generator", "surrogate"), True, True)
    on_cpu = speed.resolve(True, ["victim"], True, True, on_gpu=False)
    assert on_cpu == Speed(True, ("victim",), False, False)


def test_the_config_and_training_name_the_same_parts():
    assert config.COMPILE_PARTS == speed.COMPILE_PARTS


@pytest.mark.parametrize(("value", "message"), [
    ("[generator, generator]", "a part named twice"),
    ("[decoder]", "runtime.compile"),
    ("yes", "runtime.compile"),
])
def test_a_bad_compile_setting_is_one_config_error(value, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [f"runtime.compile={value}"])


def test_a_run_resumes_under_other_speed_options():
    """They change float order at most: the rerun guard lets a run continue under them."""
    plain = flat_config(load_config(None, []))
    fast = flat_config(load_config(None, [
        "runtime.channels_last=true", "runtime.compile=[generator, surrogate, victim]",
        "runtime.fused_optimizer=true", "runtime.pin_memory=true"]))
    assert plain != fast and changed_keys(plain, fast) == []


def tiny_uc() -> UCModule:
    torch.manual_seed(0)
    generators = ClusterGenerators(3, 16, 16 / 255, width=4, blocks=1)
    surrogate = Surrogate(resnet18(weights=None), IMAGENET_MEAN, IMAGENET_STD)
    return UCModule(generators, surrogate, torch.randn(3, 512), torch.arange(8) % 3, offset=1,
                    lr=1e-3, weight_decay=0.0, min_lr=0.0)


def uc_loss(module: UCModule, batch) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The loss and every generator gradient."""
    module.on_fit_start()
    with pytest.warns(Warning, match="self.log"):
        loss = module.training_step(module.on_after_batch_transfer(batch, 0), 0)
    loss.backward()
    return loss.detach(), [p.grad for p in module.generators.parameters()]


def channels_last(module: torch.nn.Module) -> list[bool]:
    """Whether each of ``module``'s convolutions (wider than 1 x 1) is in channels-last."""
    return [m.weight.is_contiguous(memory_format=torch.channels_last) for m in module.modules()
            if isinstance(m, torch.nn.Conv2d) and m.weight.shape[-1] > 1]


def test_channels_last_keeps_the_loss_and_the_generators_gradients():
    """The surrogate goes channels-last; the generators, whose instance norms get wrong
    gradients from a channels-last one on torch's CPU kernels, stay as they are, and every
    generator gradient is what the standard format gives."""
    module = tiny_uc()
    fast = copy.deepcopy(module)
    SpeedUp(Speed(channels_last=True)).setup(None, fast, "fit")
    assert all(channels_last(fast.surrogate))
    assert not any(channels_last(fast.generators)) and not any(channels_last(module.surrogate))
    gen = torch.Generator().manual_seed(1)
    batch = (torch.randint(0, 256, (8, 3, 16, 16), dtype=torch.uint8, generator=gen),
             torch.zeros(8, dtype=torch.long), torch.arange(8))
    (loss, grad), (fast_loss, fast_grad) = uc_loss(module, batch), uc_loss(fast, batch)
    torch.testing.assert_close(fast_loss, loss, rtol=1e-5, atol=1e-6)
    assert len(fast_grad) == len(grad) > 0
    for fast_g, g in zip(fast_grad, grad, strict=True):
        torch.testing.assert_close(fast_g.contiguous(), g, rtol=1e-4, atol=1e-6)


def test_a_compiled_part_keeps_its_checkpoint_keys():
    """``nn.Module.compile`` compiles in place: a checkpoint of a compiled run loads into a
    plain module, and the other way round."""
    module = tiny_uc()
    keys = list(module.state_dict())
    SpeedUp(Speed(compile=("generator",))).setup(None, module, "fit")
    compiled = [g._compiled_call_impl for g in module.generators.generators]
    assert all(c is not None for c in compiled)
    assert list(module.state_dict()) == keys
    tiny_uc().load_state_dict(module.state_dict(), strict=True)
    module.load_state_dict(tiny_uc().state_dict(), strict=True)
    # a second setup (a Trainer's test after its fit) compiles nothing again
    SpeedUp(Speed(compile=("generator",))).setup(None, module, "fit")
    assert [g._compiled_call_impl for g in module.generators.generators] == compiled


def test_no_options_leave_a_module_as_it_is():
    module = tiny_uc()
    before = copy.deepcopy(module.state_dict())
    SpeedUp(Speed()).setup(None, module, "fit")
    assert all(g._compiled_call_impl is None for g in module.generators.generators)
    assert all(torch.equal(v, module.state_dict()[k]) for k, v in before.items())


class OnGpu:
    """A parameter as ``fused`` sees one: where it lives."""

    is_cuda = True


def test_fused_asks_only_for_parameters_on_a_gpu():
    params = list(torch.nn.Linear(2, 2).parameters())
    speed.activate(Speed(fused_optimizer=True))
    try:
        assert speed.fused([OnGpu(), OnGpu()]) == {"fused": True}
        assert speed.fused([OnGpu(), *params]) == {}  # torch's fused step is CUDA's
    finally:
        speed.activate(Speed())
    assert speed.fused([OnGpu()]) == {}  # not asked for


def test_stage_ones_adamw_takes_the_fused_step(monkeypatch):
    """make_optimizer passes what ``fused`` says on (torch also has a fused AdamW for CPUs,
    so the pass-through is checked here; which parameters get it, above)."""
    from hpcue.training import optimizers

    module = torch.nn.Linear(2, 2)
    assert not optimizers.make_optimizer("adamw", module, 1e-3, 0.0).defaults["fused"]
    monkeypatch.setattr(optimizers, "fused", lambda params: {"fused": True})
    assert optimizers.make_optimizer("adamw", module, 1e-3, 0.0).defaults["fused"] is True
