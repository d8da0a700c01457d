"""The mixed-data arms (``victim.mixed``): a thief holding a share p of unlearnable images among
clean ones; each arm's images are the published ones for its share and the clean ones for the
rest, and its victims are reported beside the others."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from hpcue.data.shard_set import open_shards
from hpcue.data.shards import reading
from hpcue.stages.artifacts import read_clusters, read_perturbations
from hpcue.stages.evaluate import Mixed
from hpcue.stages.rundir import RunDir
from tests.conftest import hpcue, tiny_sets


def _images(root) -> tuple[np.ndarray, np.ndarray]:
    shards = open_shards(root)
    images, ids = [], []
    for info in shards.shards("train"):
        with reading(shards.root / info.file) as f:
            images.append(f["images"][:])
            ids.append(f["index"][:])
    order = np.argsort(np.concatenate(ids))
    return np.concatenate(images)[order], np.concatenate(ids)[order]


def test_mixed_arms_train_on_a_share_of_the_published_images(tmp_path):
    out = tmp_path / "run"
    hpcue("run", "--out", str(out), *tiny_sets(["victim.mixed=[0.3, 0.7]",
                                                "victim.baselines=[random]"]))
    results = json.loads((out / "results.json").read_text())
    n = int(results["stage1_batch"]["num_train"])
    assert [m["arm"] for m in results["mixed"]] == ["uc@0.3", "uc@0.7"]
    assert [m["unlearnable_images"] for m in results["mixed"]] == [round(0.3 * n),
                                                                   round(0.7 * n)]
    for m in results["mixed"]:
        assert results["victims"][m["arm"]]["mean"] == m["test_acc"]
        assert m["below_clean"]["mean"] == pytest.approx(
            results["victims"]["clean"]["mean"] - m["test_acc"], abs=1e-3)
    # the worst case over defenses is UC's alone: a thief with clean data is another threat
    assert not results["worst_case_defense"].startswith("uc@")

    run = RunDir(out)
    clean, ids = _images(run.data)
    published, _ = _images(run.unlearnable)
    saved = read_perturbations(run)
    groups = saved.groups_or(read_clusters(run))
    chosen = torch.zeros(n, dtype=torch.bool)
    chosen[: n // 3] = True
    made = Mixed(saved.deltas, groups, chosen)(torch.from_numpy(clean).permute(0, 3, 1, 2),
                                                None, torch.from_numpy(ids)).permute(0, 2, 3, 1)
    assert np.array_equal(made[: n // 3].numpy(), published[: n // 3])
    assert np.array_equal(made[n // 3:].numpy(), clean[n // 3:])
    assert not np.array_equal(published[: n // 3], clean[: n // 3])


def test_a_share_outside_zero_to_one_is_one_error(tmp_path):
    out = tmp_path / "run"
    proc = hpcue("run", "--out", str(out), "--set", "victim.mixed=[0.5, 1]", check=False)
    assert proc.returncode == 2 and "victim.mixed" in proc.stderr, proc.stderr
    assert not out.exists()
