import numpy as np
import pytest
import torch
from sklearn.cluster import KMeans
from sklearn.datasets import make_blobs
from sklearn.metrics import adjusted_rand_score

from hpcue.attacks.uc.kmeans import kmeans
from hpcue.evaluation.metrics import purity


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_scikit_learn_on_separable_blobs(seed):
    x, y = make_blobs(n_samples=600, centers=10, n_features=16, cluster_std=0.5,
                      random_state=seed)
    ours = kmeans(torch.from_numpy(x).float(), 10, n_init=5, seed=seed)
    ref = KMeans(10, n_init=5, random_state=seed).fit(x)
    assert adjusted_rand_score(ref.labels_, ours.assignments.numpy()) == 1.0
    assert adjusted_rand_score(y, ours.assignments.numpy()) == 1.0
    assert ours.inertia == pytest.approx(ref.inertia_, rel=1e-4)
    # same centers up to the order of the clusters
    order = [int(np.argmin(((ref.cluster_centers_ - c) ** 2).sum(1))) for c in
             ours.centers.numpy()]
    np.testing.assert_allclose(ours.centers.numpy(), ref.cluster_centers_[order], atol=1e-4)


def test_seeded_and_deterministic():
    x = torch.randn(500, 8)
    a, b = kmeans(x, 7, n_init=3, seed=5), kmeans(x, 7, n_init=3, seed=5)
    assert torch.equal(a.assignments, b.assignments)
    assert torch.equal(a.centers, b.centers)


def test_more_restarts_never_worse():
    x = torch.randn(400, 4)
    assert kmeans(x, 12, n_init=8, seed=0).inertia <= kmeans(x, 12, n_init=1, seed=0).inertia


def test_k_larger_than_data_is_an_error():
    with pytest.raises(ValueError, match="cannot form 5 clusters from 3 points"):
        kmeans(torch.randn(3, 2), 5)


def test_purity():
    assign = torch.tensor([0, 0, 0, 1, 1, 1])
    labels = torch.tensor([2, 2, 1, 0, 0, 0])
    assert purity(assign, labels) == pytest.approx(5 / 6)


def test_split_across_simulated_ranks_equals_one_process():
    """Two 'ranks' hold interleaved slices; a reduce that sums both gives the 1-process result."""
    x, _ = make_blobs(n_samples=300, centers=6, n_features=5, cluster_std=2.0, random_state=3)
    x = torch.from_numpy(x)
    single = kmeans(x, 6, n_init=3, seed=4)
    slices = [torch.arange(0, 300, 2), torch.arange(1, 300, 2)]
    # run both ranks in lock step: each reduce call sums the two ranks' contributions
    import threading

    barrier = threading.Barrier(2)
    box: list = [None, None]
    results: list = [None, None]

    def make_reduce(r):
        def reduce(t):
            box[r] = t.clone()
            barrier.wait()
            out = box[0] + box[1]
            barrier.wait()
            return out
        return reduce

    def work(r):
        results[r] = kmeans(x[slices[r]], 6, n_init=3, seed=4, ids=slices[r], total=300,
                            reduce=make_reduce(r))

    threads = [threading.Thread(target=work, args=(r,)) for r in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    torch.testing.assert_close(results[0].centers, single.centers)
    torch.testing.assert_close(results[1].centers, single.centers)
    merged = torch.empty(300, dtype=torch.long)
    for r in range(2):
        merged[slices[r]] = results[r].assignments
    assert torch.equal(merged, single.assignments)
    assert results[0].inertia == pytest.approx(single.inertia)
