"""Pretrained weights come from disk only; a bad or missing file is one clear error."""

import pytest
import torch
from torchvision.models import resnet18

from hpcue.models.surrogate import (
    MissingWeightsError,
    build_surrogate,
    cached_weights_path,
    load_imagenet_resnet,
)


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    return tmp_path


def test_cache_path_follows_torch_home(torch_home):
    assert cached_weights_path("resnet18") == (
        torch_home / "hub" / "checkpoints" / "resnet18-f37072fd.pth")
    assert cached_weights_path("resnet50").name == "resnet50-0676ba61.pth"


def test_missing_weights_name_the_exact_path(torch_home):
    with pytest.raises(MissingWeightsError) as err:
        load_imagenet_resnet("resnet50")
    assert str(torch_home / "hub" / "checkpoints" / "resnet50-0676ba61.pth") in str(err.value)


def test_loads_weights_from_the_torch_home_cache(torch_home):
    reference = resnet18(weights=None)
    path = cached_weights_path("resnet18")
    path.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), path)
    model = load_imagenet_resnet("resnet18")
    for (name, a), b in zip(reference.state_dict().items(), model.state_dict().values(),
                            strict=True):
        assert torch.equal(a, b), name


def test_ddp_prefixed_local_file_loads(tmp_path):
    reference = resnet18(weights=None)
    path = tmp_path / "ddp.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in reference.state_dict().items()}},
               path)
    model = load_imagenet_resnet("resnet18", path)
    assert torch.equal(model.conv1.weight, reference.conv1.weight)


def test_wrong_architecture_fails_loudly(tmp_path):
    path = tmp_path / "r18.pth"
    torch.save(resnet18(weights=None).state_dict(), path)
    with pytest.raises(ValueError, match="do not match torchvision resnet50"):
        load_imagenet_resnet("resnet50", path)


def test_corrupt_file(tmp_path):
    path = tmp_path / "bad.pth"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable PyTorch weights file"):
        load_imagenet_resnet("resnet18", path)


def test_surrogate_features_are_fc_input_and_frozen(tmp_path):
    path = tmp_path / "r18.pth"
    torch.save(resnet18(weights=None).state_dict(), path)
    surrogate = build_surrogate("resnet18", path, num_classes=10)
    surrogate.train()
    assert not surrogate.training
    assert surrogate(torch.rand(2, 3, 32, 32)).shape == (2, 512)
    assert not any(p.requires_grad for p in surrogate.parameters())
