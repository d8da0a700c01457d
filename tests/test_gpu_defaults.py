"""GPU-safe defaults, checked where a CPU can check them: what ``deterministic: auto`` becomes,
and that the precision helper leaves CPU work in fp32."""

from __future__ import annotations

import pytest
import torch

from hpcue.config import ConfigError, load_config
from hpcue.training.precision import autocast, resolve_deterministic


def test_deterministic_auto_warns_on_gpus_and_stays_strict_on_cpus():
    assert load_config().runtime.deterministic == "auto"
    assert resolve_deterministic("auto", on_gpu=True) == "warn"
    assert resolve_deterministic("auto", on_gpu=False) is True
    for explicit in (True, False, "warn"):
        assert resolve_deterministic(explicit, on_gpu=True) == explicit
    assert load_config(None, ["runtime.deterministic=warn"]).runtime.deterministic == "warn"
    with pytest.raises(ConfigError, match="runtime.deterministic"):
        load_config(None, ["runtime.deterministic=sometimes"])


@pytest.mark.parametrize("precision", ["32-true", "16-mixed", "bf16-mixed"])
def test_feature_precision_is_fp32_on_cpus(precision):
    layer = torch.nn.Linear(4, 2)
    with autocast(precision, torch.device("cpu")):
        out = layer(torch.ones(1, 4))
    assert out.dtype == torch.float32
