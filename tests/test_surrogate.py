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
    surrogate = build_surrogate("resnet18", path)
    surrogate.train()
    assert not surrogate.training
    assert surrogate(torch.rand(2, 3, 32, 32)).shape == (2, 512)
    assert not any(p.requires_grad for p in surrogate.parameters())


def _small_cnn_file(tmp_path, outputs: int):
    from hpcue.models.small_cnn import SmallCNN

    torch.manual_seed(0)
    model = SmallCNN(outputs, width=8)
    with torch.no_grad():  # non-trivial batch-norm statistics, as after training
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    path = tmp_path / "small.pt"
    torch.save(model.state_dict(), path)
    return model.eval(), path


@pytest.mark.parametrize("outputs", [4, 10])  # rotation pretext head, or one output per class
def test_small_cnn_surrogate_sees_what_the_classifier_saw(tmp_path, outputs):
    """One normalisation, inside the model: the surrogate with its head restored computes the
    classifier's own logits, so its accuracy is the classifier's."""
    model, path = _small_cnn_file(tmp_path, outputs)
    surrogate = build_surrogate("small_cnn", path)
    x = torch.rand(16, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(model.fc(surrogate(x)), model(x))
        assert torch.equal(model.fc(surrogate(x)).argmax(1), model(x).argmax(1))


def test_small_cnn_weights_without_a_head_are_refused(tmp_path):
    _, path = _small_cnn_file(tmp_path, 4)
    state = torch.load(path, weights_only=True)
    del state["fc.weight"]
    torch.save(state, path)
    with pytest.raises(ValueError, match="do not match small_cnn"):
        build_surrogate("small_cnn", path)


def test_rotation_pretext_never_reads_labels():
    from hpcue.models.small_cnn import SmallCNN
    from hpcue.training.rotation import RotationPretext, rotate_each

    image = torch.arange(3 * 4 * 4, dtype=torch.float32).view(1, 3, 4, 4)
    turned = rotate_each(image.repeat(4, 1, 1, 1), torch.tensor([0, 1, 2, 3]))
    for k in range(4):
        assert torch.equal(turned[k], torch.rot90(image[0], k, dims=(1, 2)))
    assert not torch.equal(turned[1], turned[3])

    module = RotationPretext(SmallCNN(4, width=8), lr=0.1, momentum=0.9, weight_decay=0.0)
    module.log = lambda *a, **k: None
    loss = module.training_step((torch.rand(5, 3, 16, 16), None, torch.arange(5)), 0)
    assert torch.isfinite(loss) and loss.requires_grad  # no labels were needed


def test_simclr_pretext_never_reads_labels_and_draws_its_views_from_the_seed():
    from hpcue.models.small_cnn import SmallCNN
    from hpcue.training.simclr import PROJECTION_DIM, SimCLRPretext, view

    x = torch.rand(6, 3, 16, 16)
    a = view(x, torch.Generator().manual_seed(3))
    assert torch.equal(a, view(x, torch.Generator().manual_seed(3)))  # drawn from the seed
    assert a.min() >= 0 and a.max() <= 1 and not torch.equal(a, x)

    module = SimCLRPretext(SmallCNN(PROJECTION_DIM, width=8), lr=0.1, momentum=0.9,
                           weight_decay=0.0)
    module.log = lambda *a, **k: None
    loss = module.training_step((torch.rand(5, 3, 16, 16), None, torch.arange(5)), 0)
    assert torch.isfinite(loss) and loss.requires_grad  # no labels were needed
