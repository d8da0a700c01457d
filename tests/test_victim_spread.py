"""``victim.spread``: on 2 ranks each trains half the victims on the whole training set alone;
every victim is then the one a single process trains (the same accuracies, curves and SAL), and
the results are gathered in member order."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.conftest import hpcue, tiny_sets
from tests.test_distributed import BIN, _env, _run

SETS = tiny_sets(["victim.seeds=2", "victim.baselines=[random]", "victim.ud=true",
                  "victim.ud_iterations=1", "data.num_shards=3", "runtime.timeout_s=120"])


def test_spread_victims_on_two_ranks_are_one_processs_victims(tmp_path):
    one = tmp_path / "one"
    hpcue("run", "--out", str(one), *SETS)
    two = tmp_path / "two"
    shutil.copytree(one, two)
    # the same run's victims again, spread over 2 ranks (an execution setting: same config)
    proc = _run([str(BIN / "mpiexec"), "-n", "2", str(BIN / "hpcue"), "evaluate", "--out",
                 str(two), "--force", *SETS, "--set", "victim.spread=true"], _env())
    assert "rank 1: 3 of them" in proc.stdout + proc.stderr
    a, b = (json.loads((d / "results.json").read_text()) for d in (one, two))
    record = json.loads((two / "stages" / "evaluate.json").read_text())
    assert record["victim_parallel"] == {"mode": "spread", "members_per_rank": [3, 3]}
    assert b["world_size"] == 2 and record["batch_plan"]["per_rank_batch_size"] == 64
    for arm in ("clean", "uc", "random"):
        assert b["victims"][arm]["per_seed"] == a["victims"][arm]["per_seed"], arm
        assert b["victims"][arm]["ci95"] == pytest.approx(a["victims"][arm]["ci95"])
        assert b["victim_curves"][arm] == a["victim_curves"][arm], arm
        flat = [[s for epoch in r["ud"]["arms"][arm]["sal"] for s in epoch] for r in (a, b)]
        assert flat[1] == pytest.approx(flat[0], rel=1e-4), arm
