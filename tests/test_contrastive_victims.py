"""Contrastive learners as victims (``victim.contrastive``): they learn the digits without labels
well above chance through their linear probe, on 2 ranks; only the probe reads the labels; BYOL's
target network follows the online one and is never trained by a gradient. The same 2-rank run
takes the Unlearnable Distance (``victim.ud``), its SAL passes data-parallel."""

from __future__ import annotations

import json

import pytest
import torch

from hpcue.evaluation.contrastive import ContrastiveLearner
from hpcue.models.small_cnn import SmallCNN
from tests.conftest import hpcue, tiny_sets
from tests.test_distributed import BIN, _env, _run


def test_contrastive_learners_learn_the_digits_through_their_probe_on_two_ranks(tmp_path):
    out = tmp_path / "run"
    sets = tiny_sets(["victim.contrastive=[simclr, byol]", "victim.contrastive_epochs=5",
                      "victim.ud=true", "victim.ud_iterations=1",
                      "data.num_shards=3", "runtime.timeout_s=120"])
    proc = _run([str(BIN / "mpiexec"), "-n", "2", str(BIN / "hpcue"), "run", "--out", str(out),
                 *sets], _env())
    results = json.loads((out / "results.json").read_text())
    assert results["world_size"] == 2
    c = results["contrastive"]
    assert c["methods"] == ["simclr", "byol"] and c["epochs"] == 5 and c["seeds"] == 1
    assert sorted(c["arms"]) == ["byol:clean", "byol:uc", "simclr:clean", "simclr:uc"]
    victims = results["victims"]
    # chance is 0.1 (ten digits); seen after 5-6 epochs: SimCLR 0.74, BYOL 0.51
    assert victims["simclr:clean"]["mean"] > 0.4, victims["simclr:clean"]
    assert victims["byol:clean"]["mean"] > 0.2, victims["byol:clean"]
    worst = results["worst_case_over_learners"]
    learners = {a: victims[a]["mean"] for a in ("uc", "simclr:uc", "byol:uc")}
    assert worst == {"learner": max(learners, key=learners.get),
                     "test_acc": max(learners.values())}
    assert len(results["victim_curves"]["simclr:uc"][0]) == 5  # one test per epoch
    assert "worst case (learners)" in proc.stdout
    ud = results["ud"]
    assert set(ud["arms"]) == {"clean", "uc"} and ud["settings"]["iterations"] == 1
    assert ud["arms"]["clean"]["ud"] == 0.0 and ud["arms"]["uc"]["ud"] >= 0.0
    # every epoch (2), every layer of the small CNN (4 convolutions, fc)
    assert [len(e) for e in ud["arms"]["uc"]["sal"]] == [5, 5]
    if worst["learner"] != "uc":
        assert "learns more from the protected images" in " ".join(results["verdict"]["text"])


@pytest.mark.parametrize("method", ["simclr", "byol"])
def test_only_the_probe_reads_the_labels(method):
    torch.manual_seed(0)
    learner = ContrastiveLearner(method, SmallCNN(10, width=8), 10)
    v0, v1 = torch.rand(8, 3, 16, 16), torch.rand(8, 3, 16, 16)
    labels = torch.arange(8) % 10
    grads = []
    for y in (labels, labels.flip(0)):
        learner.zero_grad()
        ssl, probe = learner.losses(v0, v1, y)
        (ssl + probe).backward()
        grads.append({n: p.grad.clone() for n, p in learner.named_parameters()
                      if p.grad is not None})
    encoder = [n for n in grads[0] if n.startswith("encoder.")]
    assert encoder and all(torch.equal(grads[0][n], grads[1][n]) for n in encoder)
    assert not torch.equal(grads[0]["probe.weight"], grads[1]["probe.weight"])


def test_byols_target_follows_the_online_network_without_gradients():
    torch.manual_seed(0)
    learner = ContrastiveLearner("byol", SmallCNN(10, width=8), 10)
    assert not any(p.requires_grad for p in learner.target_encoder.parameters())
    with torch.no_grad():
        for p in learner.encoder.parameters():
            p.add_(1.0)
    target = next(learner.target_encoder.parameters()).clone()
    online = next(learner.encoder.parameters())
    learner.follow(0.9)
    torch.testing.assert_close(next(learner.target_encoder.parameters()),
                               0.9 * target + 0.1 * online)


def test_an_unknown_contrastive_method_is_one_error(tmp_path):
    out = tmp_path / "run"
    proc = hpcue("run", "--out", str(out), "--set", "victim.contrastive=[moco]", check=False)
    assert proc.returncode == 2 and "victim.contrastive" in proc.stderr, proc.stderr
    assert not out.exists()
