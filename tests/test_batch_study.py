"""The batch-size study: the shipped spec's shape, and a tiny study run end to end through
`hpcue sweep local` at one process and under mpiexec at two ranks (a real launcher), whose
points at the same global batch agree within their seeds' spread and take the same steps."""

from __future__ import annotations

import csv
import math
import statistics
from pathlib import Path

import yaml
from scipy.stats import t

from hpcue.stages.slices import slice_digest
from hpcue.sweep.points import load_sweep
from tests.conftest import TINY, hpcue

SEEDS = [0, 1, 2]


def test_the_shipped_study_spans_8_to_1024_on_a_log_scale_with_3_seeds_and_shared_clusters():
    sweep = load_sweep("digits-batch-study")
    main = [p for p in sweep.points if p.name.endswith("-adamw")]
    batches = sorted({p.run_config.train.global_batch_size for p in main})
    assert batches == [2 ** i for i in range(3, 11)]  # 8 ... 1024, a factor 2 apart
    for batch in batches:
        assert sorted(p.run_config.seed for p in main
                      if p.run_config.train.global_batch_size == batch) == SEEDS
    assert len({slice_digest(p.run_config, "cluster") for p in sweep.points}) == 1
    assert sweep.spec.share_clusters and sweep.spec.training == "epochs"
    variants = {p.name.rsplit("-", 1)[1] for p in sweep.points}
    assert variants == {"adamw", "sqrt", "warmup", "lamb", "lars"}
    optimizers = {p.run_config.train.optimizer for p in sweep.points}
    assert optimizers == {"adamw", "lamb", "lars"}
    assert all(p.run_config.train.steps is None for p in sweep.points)
    # the protecting default underneath: the MNIST-5k surrogate (other data)
    assert {p.run_config.surrogate.pretraining for p in sweep.points} == {"mnist5k"}


def _spec(folder: Path, batches: list[int]) -> Path:
    """A tiny study (the shipped one's axes at test sizes): 2 epochs, 2 victims a run."""
    spec = {"name": "tiny-study", "machine": "local", "configs": ["debug-digits"],
            "global_batch_sizes": batches, "seeds": SEEDS, "ranks_per_node": 1,
            "overrides": [*TINY, "data.split_seed=0", "cluster.seed=0", "victim.seeds=2",
                          "victim.epochs=4", "victim.baselines=[random]",
                          "runtime.accelerator=cpu", "runtime.timeout_s=120"]}
    path = folder / f"tiny-study-{'-'.join(map(str, batches))}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _welch_half_width(a: list[float], b: list[float]) -> float:
    """The 95% interval's half width of a difference of two means (Welch), each std at least
    0.01 (a test set's resolution here), so two near-identical groups still have a spread."""
    va, vb = (max(statistics.stdev(x), 0.01) ** 2 / len(x) for x in (a, b))
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    return float(t.ppf(0.975, df)) * math.sqrt(va + vb)


def test_a_tiny_study_end_to_end_and_one_global_batch_agrees_on_one_and_two_ranks(tmp_path):
    runs = tmp_path / "runs"
    first = hpcue("sweep", "local", str(_spec(tmp_path, [64, 128])), "--runs",
                  str(runs / "one"))
    # where a long study stands, point by point
    assert "point 1 of 6 (0 finished, 0 failed so far) digits-b64-s0" in first.stdout
    assert "point 6 of 6 (5 finished, 0 failed so far) digits-b128-s2" in first.stdout
    hpcue("sweep", "local", str(_spec(tmp_path, [128])), "--runs", str(runs / "two"),
          "--mpiexec", "2")
    hpcue("report", str(runs))
    with (runs / "report" / "seeds.csv").open() as fh:
        lines = list(csv.DictReader(fh))
    assert len(lines) == 9 and {r["reading"] for r in lines} == {"epochs"}
    steps = {(r["global_batch_size"], r["world_size"]): r["optimizer_steps"] for r in lines}
    # 1,347 training images, 2 epochs: 22 steps an epoch at 64, 11 at 128, on any world size
    assert steps == {("64", "1"): "44", ("128", "1"): "22", ("128", "2"): "22"}
    figure = runs / "report" / "study-digits.png"
    assert figure.is_file() and figure.stat().st_size > 10_000
    md = (runs / "report" / "report.md").read_text()
    assert "same number of epochs at every batch size" in md

    def accuracies(world: str) -> list[float]:
        return [float(r["unlearnable_test_acc"]) for r in lines
                if r["global_batch_size"] == "128" and r["world_size"] == world]

    one, two = accuracies("1"), accuracies("2")
    assert len(one) == len(two) == 3
    gap = abs(statistics.mean(one) - statistics.mean(two))
    assert gap <= _welch_half_width(one, two), (one, two)

    hpcue("report", str(runs), "--across-world-sizes", "--out", str(tmp_path / "pooled"))
    pooled = (tmp_path / "pooled" / "report.md").read_text()
    assert "| digits | - | 128 | 1+2 |" in pooled

    # a point that failed in its last stage: only it reruns, and no finished point is touched
    one = runs / "one" / "tiny-study"
    broken = one / "digits-b64-s1"
    (broken / "results.json").unlink()
    (broken / "stages" / "evaluate.json").unlink()
    before = {p.name: (p / "results.json").stat().st_mtime_ns
              for p in one.iterdir() if (p / "results.json").is_file()}
    rerun = hpcue("sweep", "local", str(_spec(tmp_path, [64, 128])), "--runs", str(runs / "one"))
    assert rerun.stdout.count("finished, skipped") == 5
    said = rerun.stdout + rerun.stderr
    assert "stage train: done earlier" in said and "stage evaluate ->" in said
    assert "stage train ->" not in said  # it resumed at evaluate
    assert (broken / "results.json").is_file()
    assert {p: (one / p / "results.json").stat().st_mtime_ns for p in before} == before
