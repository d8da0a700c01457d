import pytest
import torch

from hpcue.attacks.base import perturb
from hpcue.attacks.uc.objective import target_clusters, uc_loss
from hpcue.models.generator import ClusterGenerators, ResnetGenerator
from hpcue.models.small_cnn import SmallCNN
from hpcue.models.surrogate import Surrogate


def test_paper_width_has_about_7_8m_parameters():
    n = sum(p.numel() for p in ResnetGenerator(64, 6).parameters())
    assert 7.7e6 < n < 7.9e6


@pytest.mark.parametrize("bound", ["clamp", "scale"])
@pytest.mark.parametrize("eps", [1 / 255, 8 / 255, 16 / 255, 1.0])
def test_perturbation_never_exceeds_eps(bound, eps):
    gens = ClusterGenerators(3, 16, eps, width=4, blocks=1, bound=bound, seed=1)
    with torch.no_grad():  # blow the weights up so the tanh saturates everywhere
        for p in gens.parameters():
            p.mul_(50)
    deltas = gens().detach()
    assert deltas.shape == (3, 3, 16, 16)
    assert float(deltas.abs().max()) <= eps + 1e-7
    x = torch.rand(6, 3, 16, 16)
    out = perturb(x, deltas, torch.tensor([0, 1, 2, 0, 1, 2]))
    assert float((out - x).abs().max()) <= eps + 1e-6
    assert out.min() >= 0 and out.max() <= 1


def test_noise_is_fixed_per_seed():
    a = ClusterGenerators(2, 16, 0.1, width=4, blocks=1, seed=3)
    b = ClusterGenerators(2, 16, 0.1, width=4, blocks=1, seed=3)
    assert torch.equal(a.noise, b.noise)
    assert not torch.equal(a.noise[0], a.noise[1])


def test_targets_are_next_cluster():
    assert target_clusters(torch.tensor([0, 1, 9]), 1, 10).tolist() == [1, 2, 0]


def test_objective_decreases():
    torch.manual_seed(0)
    surrogate = Surrogate(SmallCNN(10, width=8))
    # an untrained surrogate barely reacts to 16/255; a wide budget shows the optimisation
    gens = ClusterGenerators(4, 16, 0.5, width=8, blocks=1, bound="scale", seed=0)
    x = torch.rand(64, 3, 16, 16)
    clusters = torch.arange(64) % 4
    with torch.no_grad():  # centers as UC forms them: mean clean features of each cluster
        feats = surrogate(x)
        centers = torch.stack([feats[clusters == k].mean(0) for k in range(4)]) * 20
    opt = torch.optim.Adam(gens.parameters(), lr=1e-2)
    losses = []
    for _ in range(60):
        loss = uc_loss(surrogate(perturb(x, gens(), clusters)), centers,
                       target_clusters(clusters, 1, 4))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) < 0.92 * sum(losses[:5]), losses[::10] + losses[-1:]
