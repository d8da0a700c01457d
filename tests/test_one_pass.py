"""The one-pass trainer: each generator learns only from its own cluster's images (hpcue's
scheme), or from every image (``generator_images="all"``, the UC reference's scheme)."""

import pytest
import torch

from hpcue.attacks.base import perturb
from hpcue.attacks.uc.module import UCModule
from hpcue.attacks.uc.objective import target_clusters, uc_loss
from hpcue.models.generator import ClusterGenerators
from hpcue.models.small_cnn import SmallCNN
from hpcue.models.surrogate import Surrogate


def _module(assignments, generator_images="own_cluster"):
    torch.manual_seed(0)
    surrogate = Surrogate(SmallCNN(10, width=8))
    gens = ClusterGenerators(4, 16, 16 / 255, width=4, blocks=1, bound="scale", seed=0)
    centers = torch.randn(4, 32)
    return UCModule(gens, surrogate, centers, assignments, offset=1, lr=1e-3,
                    weight_decay=0.0, min_lr=0.0, generator_images=generator_images)


def _grads(module, images, index):
    module.zero_grad()
    loss = module.training_step((images, torch.zeros(len(index)), index), 0)
    loss.backward()
    return [torch.cat([p.grad.flatten() if p.grad is not None else torch.zeros(p.numel())
                       for p in g.parameters()]) for g in module.generators.generators]


def test_generators_get_gradients_only_from_their_own_cluster(monkeypatch):
    assignments = torch.tensor([0, 2, 0, 2, 1, 3, 1, 3])
    module = _module(assignments)
    monkeypatch.setattr(UCModule, "log", lambda *a, **k: None)
    images = torch.rand(8, 3, 16, 16)
    index = torch.tensor([0, 1, 2, 3])  # only clusters 0 and 2 in this batch
    grads = _grads(module, images[index], index)
    assert grads[0].abs().sum() > 0 and grads[2].abs().sum() > 0
    assert torch.count_nonzero(grads[1]) == 0 and torch.count_nonzero(grads[3]) == 0


def _own_cluster_grads(module, images, assignments, k):
    """Generator k trained alone on its own cluster: the mean UC loss over cluster k's images."""
    own = (assignments == k).nonzero().flatten()
    module.zero_grad()
    perturbed = perturb(images[own], module.generators(), assignments[own])
    targets = target_clusters(assignments[own], 1, len(module.centers))
    uc_loss(module.surrogate(perturbed), module.centers, targets).backward()
    g = module.generators.generators[k]
    return torch.cat([p.grad.flatten() for p in g.parameters()])


def test_mixed_batch_gradient_equals_each_generator_alone_on_its_cluster(monkeypatch):
    """G_k's gradient on a mixed batch = its gradient on cluster k's images alone (each
    generator's loss is the mean over its own cluster, whatever the cluster's share)."""
    assignments = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3, 0, 1])
    module = _module(assignments)
    monkeypatch.setattr(UCModule, "log", lambda *a, **k: None)
    images = torch.rand(10, 3, 16, 16)
    mixed = _grads(module, images, torch.arange(10))
    for k in range(4):
        alone = _own_cluster_grads(module, images, assignments, k)
        torch.testing.assert_close(mixed[k], alone, rtol=1e-4, atol=1e-7)


def test_a_generator_whose_cluster_is_absent_is_not_stepped(monkeypatch):
    assignments = torch.tensor([0, 2, 0, 2, 1, 3, 1, 3])
    module = _module(assignments)
    monkeypatch.setattr(UCModule, "log", lambda *a, **k: None)
    opt = torch.optim.AdamW(module.generators.parameters(), lr=1e-2, weight_decay=0.1)
    before = [torch.cat([p.detach().flatten().clone() for p in g.parameters()])
              for g in module.generators.generators]
    index = torch.tensor([0, 1, 2, 3])  # clusters 0 and 2 only
    module.training_step((torch.rand(4, 3, 16, 16), torch.zeros(4), index), 0).backward()
    module.on_before_optimizer_step(opt)
    opt.step()
    after = [torch.cat([p.detach().flatten() for p in g.parameters()])
             for g in module.generators.generators]
    assert not torch.equal(before[0], after[0]) and not torch.equal(before[2], after[2])
    assert torch.equal(before[1], after[1]) and torch.equal(before[3], after[3])  # no decay


def test_surrogate_is_frozen_and_outside_the_module_tree():
    module = _module(torch.zeros(4, dtype=torch.long))
    names = [n for n, _ in module.named_parameters()]
    assert names and all(n.startswith("generators.") for n in names)
    module.train()
    assert module.surrogate.training is False
    assert all(not p.requires_grad for p in module.surrogate.parameters())


def test_all_images_scheme_trains_every_generator_on_every_image(monkeypatch):
    """generator_images="all" (the UC reference): G_k's gradient in the one pass = the mean UC
    loss over every image of the batch, each perturbed by delta_k and pulled toward k's target,
    as the reference's k-th pass computes it; absent clusters do not matter."""
    assignments = torch.tensor([0, 0, 2, 2, 0, 2])  # clusters 1 and 3 hold no image
    module = _module(assignments, "all")
    monkeypatch.setattr(UCModule, "log", lambda *a, **k: None)
    images = torch.rand(6, 3, 16, 16)
    together = _grads(module, images, torch.arange(6))
    for k in range(4):
        module.zero_grad()
        mine = torch.full((6,), k)
        perturbed = perturb(images, module.generators(), mine)
        targets = target_clusters(mine, 1, len(module.centers))
        uc_loss(module.surrogate(perturbed), module.centers, targets).backward()
        alone = torch.cat([p.grad.flatten() for p in module.generators.generators[k].parameters()])
        assert alone.abs().sum() > 0
        torch.testing.assert_close(together[k], alone, rtol=1e-4, atol=1e-7)
    with pytest.raises(ValueError, match="own_cluster or all"):
        _module(assignments, "some")
