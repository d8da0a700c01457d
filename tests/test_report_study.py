"""The batch-size study in `hpcue report`: 95% intervals over seeds (a one-run row: over its
victims), the paired advantage over random, the per-seed table with each run's stage-1 steps,
which reading of "the same training" was used, one row across world sizes, and the figure.

Run directories are fabricated (config.yaml + results.json): nothing trains here.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import yaml
from scipy.stats import t

from hpcue.sweep.report import collect, report, summarise
from hpcue.sweep.report_study import fmt_interval, reading_note

PNG = b"\x89PNG\r\n\x1a\n"


def study_run(root: Path, name: str, *, seed: int, batch: int, unl: float, rand: float,
              world: int = 1, steps: int = 100, reading: str = "epochs",
              optimizer: str | None = None, victims_ci: list[float] | None = None) -> Path:
    d = root / name
    d.mkdir(parents=True)
    train = {"global_batch_size": batch}
    if optimizer:
        train["optimizer"] = optimizer
    (d / "config.yaml").write_text(yaml.safe_dump({"name": name, "seed": seed, "train": train,
                                                   "runtime": {"launcher": "mpi"}}))
    adv = round(rand - unl, 4)
    result = {
        "dataset": "digits", "global_batch_size": batch, "world_size": world, "seed": seed,
        "clean_test_acc": 0.98, "unlearnable_test_acc": unl, "cluster_purity": 0.97,
        "seconds": {"train": 1.0}, "stage1_images_per_second": 1000.0,
        "worst_case_unlearnable_test_acc": 0.95, "worst_case_defense": "uc+jpeg10",
        "num_classes": 10, "stage1_optimizer": optimizer or "adamw",
        "stage1_budget": {"reading": reading, "epochs": 30, "optimizer_steps": steps},
        "baselines": {"random": {"mean": rand, "ci95": [rand - 0.1, rand + 0.05], "n": 3,
                                 "test_se": 0.01}},
        "uc_advantage_over_random": {"mean": adv, "ci95": [adv - 0.2, adv + 0.2], "n": 3,
                                     "test_se": 0.02},
        "victims": {"uc": {"mean": unl, "ci95": victims_ci or [unl - 0.05, unl + 0.05],
                           "n": 3, "test_se": 0.01},
                    "clean": {"mean": 0.98, "ci95": [0.97, 0.99], "n": 3, "test_se": 0.005},
                    "uc+jpeg10": {"mean": 0.95, "ci95": [0.94, 0.96], "n": 3,
                                  "test_se": 0.008}},
    }
    (d / "results.json").write_text(json.dumps(result))
    return d


def rows_of(runs: Path, across: bool = False) -> list[dict]:
    results, _, expected = collect(runs)
    return summarise(results, expected, across)


def test_a_rows_interval_is_students_t_over_its_seeds_with_the_test_error(tmp_path):
    runs = tmp_path / "runs"
    uncs = [0.5, 0.6, 0.7]
    for seed, unl in enumerate(uncs):
        study_run(runs, f"b64-s{seed}", seed=seed, batch=64, unl=unl, rand=0.9)
    (row,) = rows_of(runs)
    s = row["study"]["unlearnable"]
    half = t.ppf(0.975, 2) * math.sqrt(0.01 / 3 + 0.01 ** 2)  # std 0.1; test se 0.01
    assert s["n"] == 3 and s["over"] == "seeds" and s["mean"] == pytest.approx(0.6)
    assert s["ci95"] == pytest.approx([0.6 - half, 0.6 + half], abs=1e-4)
    adv = row["study"]["advantage"]  # each run's paired mean: 0.4, 0.3, 0.2
    assert adv["mean"] == pytest.approx(0.3) and adv["ci95"][0] < 0.3 < adv["ci95"][1]
    assert row["study"]["worst_case"]["mean"] == pytest.approx(0.95)
    assert row["_seed_values"]["unlearnable"] == uncs


def test_a_one_run_row_shows_the_interval_over_its_victims_and_none_is_shown_as_na(tmp_path):
    runs = tmp_path / "runs"
    study_run(runs, "b64-s0", seed=0, batch=64, unl=0.5, rand=0.9, victims_ci=[0.41, 0.58])
    (row,) = rows_of(runs)
    s = row["study"]["unlearnable"]
    assert s["n"] == 1 and s["ci95"] == [0.41, 0.58] and s["over"] == "victim seeds"
    assert row["study"]["worst_case"]["ci95"] == [0.94, 0.96]  # its worst arm's
    assert fmt_interval(s) == "0.500 [0.410, 0.580] (victims)"
    assert fmt_interval({"mean": 0.5, "ci95": None}) == "0.500 [n/a]"


def test_the_per_seed_table_names_each_runs_steps_and_the_report_says_which_reading(tmp_path):
    runs = tmp_path / "runs"
    for batch, steps in ((64, 630), (1024, 60)):
        for seed in (0, 1):
            study_run(runs, f"b{batch}-s{seed}", seed=seed, batch=batch, unl=0.6, rand=0.9,
                      steps=steps)
    out = report(runs)
    with (tmp_path / "runs" / "report" / "seeds.csv").open() as fh:
        lines = list(csv.DictReader(fh))
    assert [(r["global_batch_size"], r["seed"], r["optimizer_steps"]) for r in lines] == [
        ("64", "0", "630"), ("64", "1", "630"), ("1024", "0", "60"), ("1024", "1", "60")]
    assert {r["reading"] for r in lines} == {"epochs"}
    md = (tmp_path / "runs" / "report" / "report.md").read_text()
    assert "same number of epochs at every batch size" in md
    assert "| digits | - | 1024 | 1 | none | adamw | epochs | 60 | 2 |" in md
    for path in out["study_plots"]:
        assert path.is_file() and path.stat().st_size > 1000
    assert out["study_plots"][0].read_bytes().startswith(PNG)
    assert "b1024-s1" in (tmp_path / "runs" / "report" / "seeds.md").read_text()


def test_the_reading_note_never_claims_one_reading_for_mixed_rows():
    assert "optimizer steps at every batch" in reading_note([{"reading": "steps"}])
    assert "differ" in reading_note([{"reading": "steps"}, {"reading": "epochs"}])
    assert "do not say" in reading_note([{"reading": None}])


def test_an_optimizer_is_its_own_row_and_line(tmp_path):
    runs = tmp_path / "runs"
    for opt in (None, "lamb"):
        for seed in (0, 1):
            study_run(runs, f"{opt}-s{seed}", seed=seed, batch=256, unl=0.6, rand=0.9,
                      optimizer=opt)
    rows = rows_of(runs)
    assert sorted(r["optimizer"] for r in rows) == ["adamw", "lamb"]
    assert any("train.optimizer=lamb" in r["setting"] for r in rows)


def test_across_world_sizes_one_global_batch_is_one_row_listing_its_world_sizes(tmp_path):
    runs = tmp_path / "runs"
    for world in (1, 2):
        for seed in (0, 1, 2):
            study_run(runs, f"w{world}/b64-s{seed}", seed=seed, batch=64, world=world,
                      unl=0.5 + 0.05 * seed, rand=0.9)
    apart = rows_of(runs)
    assert sorted(r["world_size"] for r in apart) == [1, 2] and {r["seeds"] for r in apart} == {3}
    (pooled,) = rows_of(runs, across=True)
    # one seed on two world sizes is still one seed: 3, and the interval over those 3
    assert pooled["world_size"] == "1+2" and pooled["seeds"] == 3
    assert pooled["study"]["unlearnable"]["n"] == 3
    report(runs, across_world_sizes=True)
    with (runs / "report" / "seeds.csv").open() as fh:
        assert sorted(r["world_size"] for r in csv.DictReader(fh)) == ["1"] * 3 + ["2"] * 3


def test_a_legend_names_what_differs_from_the_defaults_and_never_two_lines_alike():
    from hpcue.sweep.report_plots import short_label

    assert short_label("train.lr=0.003, train.optimizer=lamb, lr none", True) == \
        "train.optimizer=lamb"
    assert short_label("train.lr=1.0, train.optimizer=lars", True) == \
        "train.lr=1.0, train.optimizer=lars"
    assert short_label("train.optimizer=adamw, train.warmup_epochs=0.0", True) == "defaults"
    assert short_label("", False) == ""
    labels = ["train.optimizer=adamw, train.warmup_epochs=0.0",
              "train.optimizer=adamw, train.warmup_epochs=5.0",
              "train.optimizer=lamb, train.warmup_epochs=0.0"]
    assert len({short_label(label, True) for label in labels}) == 3


def test_a_damaged_interval_or_a_nan_never_reaches_the_figure(tmp_path):
    runs = tmp_path / "runs"
    study_run(runs, "b64-s0", seed=0, batch=64, unl=0.5, rand=0.9, victims_ci=[0.6, 0.7])
    (row,) = rows_of(runs)
    assert row["study"]["unlearnable"]["ci95"] is None  # does not hold its mean: not used
    path = runs / "b64-s0" / "results.json"
    path.write_text(path.read_text().replace('"mean": 0.4', '"mean": NaN'))
    (row,) = rows_of(runs)
    assert row["study"]["advantage"] is None
    report(runs)


def test_the_attack_comparison_table_names_each_attack_and_its_threat_model(tmp_path):
    """Rows of several attacks get the comparison table (threat model, quality, time); rows
    of one attack (UC only, and results.json from before attacks were named) get none."""
    runs = tmp_path / "runs"
    for seed in (0, 1):
        study_run(runs, f"uc-s{seed}", seed=seed, batch=64, unl=0.6, rand=0.9)
    report(runs, tmp_path / "one")
    assert "attacks compared" not in (tmp_path / "one" / "report.md").read_text()
    for seed in (0, 1):
        d = study_run(runs, f"em-s{seed}", seed=seed, batch=64, unl=0.8 + seed / 100, rand=0.9)
        config = yaml.safe_load((d / "config.yaml").read_text())
        (d / "config.yaml").write_text(yaml.safe_dump({**config,
                                                       "attack": {"name": "em_samplewise"}}))
        result = json.loads((d / "results.json").read_text())
        result |= {"attack": {"name": "em_samplewise", "uses_labels": True},
                   "psnr_db": 26.5 + seed, "ssim": 0.96, "attack_seconds": 20.0 + seed}
        (d / "results.json").write_text(json.dumps(result))
    rows = {r["attack"]: r for r in rows_of(runs)}
    assert rows["em_samplewise"]["uses_labels"] is True and rows["uc"]["uses_labels"] is None
    assert rows["em_samplewise"]["psnr_db"] == 27.0 and rows["em_samplewise"]["seeds"] == 2
    report(runs, tmp_path / "two")
    text = (tmp_path / "two" / "report.md").read_text()
    table = text[text.index("## The attacks compared"):].splitlines()
    em = next(line for line in table if "| em_samplewise |" in line)
    assert "| yes |" in em and "27.0 dB / 0.960" in em and "| 20.5 |" in em
    assert "0.805 [" in em and "(uc+jpeg10)" in em
    assert any("| uc | - |" in line for line in table)


def test_the_learners_table_gives_every_learner_and_the_worst_case(tmp_path):
    """Rows whose runs trained contrastive learners, other architectures, mixed sets or took
    UD get one line per learner and set (mean ± std over seeds) and the worst case; rows of
    one victim alone get no such table."""
    runs = tmp_path / "runs"
    for seed in (0, 1):
        study_run(runs, f"uc-s{seed}", seed=seed, batch=64, unl=0.6, rand=0.9)
    report(runs, tmp_path / "plain")
    assert "Every learner" not in (tmp_path / "plain" / "report.md").read_text()
    for seed in (0, 1):
        d = runs / f"uc-s{seed}"
        result = json.loads((d / "results.json").read_text())
        result["victim"] = "small_cnn"
        result["victims"] |= {"simclr:clean": {"mean": 0.7}, "simclr:uc": {"mean": 0.6 + seed / 10},
                              "vgg11_bn:clean": {"mean": 0.97}, "vgg11_bn:uc": {"mean": 0.5},
                              "uc@0.5": {"mean": 0.9}}
        result |= {"contrastive": {"methods": ["simclr"]},
                   "other_archs": {"vgg11_bn": {}},
                   "mixed": [{"share": 0.5, "arm": "uc@0.5"}],
                   "ud": {"arms": {"uc": {"ud": 0.4 + seed / 10}, "clean": {"ud": 0.0}}},
                   "worst_case_over_learners": {"learner": "simclr:uc",
                                                "test_acc": 0.6 + seed / 10}}
        (d / "results.json").write_text(json.dumps(result))
    report(runs, tmp_path / "learners")
    text = (tmp_path / "learners" / "report.md").read_text()
    table = text[text.index("## Every learner"):].splitlines()
    simclr = next(line for line in table if "| simclr (contrastive, linear probe) | uc |" in line)
    assert "0.650 ± 0.071 (n=2)" in simclr and "0.700 ± 0.000 (n=2)" in simclr
    supervised = next(line for line in table if "| small_cnn (supervised) | uc |" in line)
    assert supervised.endswith("| 0.45 |")  # the mean UD over the seeds
    assert any("| vgg11_bn (supervised) | uc | 0.500" in line for line in table)
    assert any("0.5 unlearnable, rest clean | 0.900" in line for line in table)
    worst = next(line for line in table if "worst case over learners" in line)
    assert "0.650 ± 0.071 (n=2)" in worst and worst.endswith("| simclr:uc |")
