"""`hpcue report`: one row per config (never two configs averaged as seeds), mean ± std or n/a,
the columns a paper cites, the LaTeX table, and the batch plot's lines, chance and files.

Run directories are fabricated (config.yaml + results.json): nothing trains here. The damaged
and missing results are tested in tests/test_sweep_safety.py.
"""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path

import pytest
import yaml

from hpcue.sweep.report import collect, report, summarise
from hpcue.sweep.report_plots import batch_lines, chance
from hpcue.sweep.report_tables import eps_255, latex, markdown, tex_escape

BASE_LR = 0.003
PNG = b"\x89PNG\r\n\x1a\n"


def fake_run(root: Path, name: str, *, seed: int = 0, batch: int = 32, clean: float = 0.9,
             unl: float = 0.5, rand: float | None = None, eps: float | None = 8 / 255,
             k: int | None = 10, victim_epochs: int | None = 8, rule: str = "none",
             image_size: int = 16, num_classes: int | None = 10,
             effective_lr: bool = True) -> Path:
    """A finished run's directory: its config.yaml and results.json (None: the key left out,
    as an older hpcue wrote it)."""
    d = root / name
    d.mkdir(parents=True)
    config = {"name": name, "seed": seed,
              "data": {"image_size": image_size, "num_workers": 2},
              "train": {"global_batch_size": batch, "lr_scaling": rule, "epsilon": eps},
              "cluster": {"num_clusters": k}, "victim": {"epochs": victim_epochs},
              "runtime": {"launcher": "mpi"}}
    for section in config.values():  # what an older config.yaml did not hold
        if isinstance(section, dict):
            for key in [key for key, value in section.items() if value is None]:
                del section[key]
    (d / "config.yaml").write_text(yaml.safe_dump(config))
    factor = {"none": 1.0, "linear": batch / 32, "sqrt": math.sqrt(batch / 32)}[rule]
    plan = {"lr_scaling": rule, "base_lr": BASE_LR}
    if effective_lr:
        plan["effective_lr"] = BASE_LR * factor
    result = {"dataset": "digits", "global_batch_size": batch, "world_size": 2, "seed": seed,
              "clean_test_acc": clean, "unlearnable_test_acc": unl, "cluster_purity": 0.8,
              "seconds": {"cluster": 1.0, "train": 2.0},
              "stage1_images_per_second": 100.0 * batch, "stage1_batch": plan,
              "worst_case_unlearnable_test_acc": unl, "epsilon": eps, "num_clusters": k,
              "num_classes": num_classes}
    result = {key: value for key, value in result.items() if value is not None}
    if rand is not None:
        result["baselines"] = {"random": {"mean": rand}}
    (d / "results.json").write_text(json.dumps(result))
    return d


def rows_of(runs: Path) -> list[dict]:
    """The report's rows without writing files or drawing (fast)."""
    results, _, expected = collect(runs)
    return summarise(results, expected)


def table_rows(md: str) -> list[str]:
    """The main table's rows (the study table with intervals follows it)."""
    main = md.split("## The batch-size study")[0]
    return [line for line in main.splitlines() if line.startswith("| digits |")]


def test_seeds_of_one_config_are_one_row_with_mean_and_std_and_a_one_run_row_has_no_spread(
        tmp_path):
    runs = tmp_path / "runs" / "sw"
    fake_run(runs, "b32-s0", batch=32, seed=0, clean=0.9, unl=0.5, rand=0.8)
    fake_run(runs, "b32-s1", batch=32, seed=1, clean=0.8, unl=0.7, rand=0.9)
    fake_run(runs, "b64-s0", batch=64, seed=0, clean=0.95, unl=0.6, rand=0.9)
    (runs / "sweep.json").write_text(json.dumps({"points": ["b32-s0", "b32-s1", "b64-s0",
                                                             "b64-s1"], "seeds": [0, 1]}))
    paths = report(tmp_path / "runs")
    rows = list(csv.DictReader(paths["csv"].open()))
    assert [(r["global_batch_size"], r["seeds"]) for r in rows] == [("32", "2"), ("64", "1")]
    assert float(rows[0]["clean_test_acc_mean"]) == pytest.approx(0.85)
    assert float(rows[0]["unlearnable_test_acc_std"]) == pytest.approx(0.1414, abs=1e-4)
    assert float(rows[0]["random_test_acc_mean"]) == pytest.approx(0.85)
    # the CSV keeps numbers; a single run's spread is empty, not 0
    assert float(rows[0]["epsilon"]) == pytest.approx(8 / 255)
    assert (rows[0]["num_clusters"], rows[0]["victim_epochs"]) == ("10", "8")
    assert float(rows[0]["effective_lr"]) == BASE_LR and rows[0]["num_classes"] == "10"
    assert rows[1]["unlearnable_test_acc_std"] == rows[1]["clean_test_acc_std"] == ""
    assert re.fullmatch(r"[0-9a-f]{8,12}", rows[0]["config"])
    assert rows[0]["config"] != rows[1]["config"]  # another batch is another config

    md = paths["markdown"].read_text()
    first, second = table_rows(md)
    assert first == (f"| digits | - | 32 | 2 | none | 2 | {rows[0]['config']} | 8/255 | 10 | 8 | "
                     f"0.003 | 0.8500 ± 0.0707 | 0.6000 ± 0.1414 | 0.8500 ± 0.0707 | "
                     f"0.6000 ± 0.1414 | 0.800 | 3.0 | 3200.0 |")
    # one seed has no spread to print; a point with fewer seeds than asked for is marked
    assert second.startswith("| digits | - | 64 | 2 | none | 1 of 2 (!) |")
    assert "| 0.9500 ± n/a | 0.6000 ± n/a | 0.9000 ± n/a |" in second
    assert "± 0.0000" not in md and "n/a: one seed" in md
    assert "Chance level (1 / number of classes): digits 1/10 = 0.1000." in md
    assert "Missing or failed points (1): sw/b64-s1" in md

    tex = paths["latex"].read_text()
    assert tex.count(r" \\") == 3  # the head and one line per config
    assert r"$0.600 \pm 0.141$" in tex and r"$0.950 \pm$ n/a" in tex
    assert r"\pm 0.000$" not in tex

    # the batch plot as PNG and PDF, the throughput plot as PNG
    plots = paths["batch_plots"]
    assert [p.name for p in plots] == ["accuracy_vs_batch-digits.png",
                                       "accuracy_vs_batch-digits.pdf"]
    assert plots[0].read_bytes()[:8] == PNG and plots[1].read_bytes()[:5] == b"%PDF-"
    assert paths["throughput_plot"].read_bytes()[:8] == PNG
    assert not [p for p in paths["csv"].parent.iterdir() if p.name.endswith(".tmp")]


def test_runs_with_other_settings_are_other_rows(tmp_path):
    runs = tmp_path / "runs"
    fake_run(runs, "debug", batch=64, clean=0.98, unl=0.95, image_size=32)  # another size
    fake_run(runs / "sw", "b64-s0", batch=64, seed=0, clean=0.9, unl=0.5)
    fake_run(runs / "sw", "b64-s1", batch=64, seed=1, clean=0.8, unl=0.7)  # its seed twin
    rows = rows_of(runs)
    assert [(r["setting"], r["seeds"]) for r in rows] == [("data.image_size=16", 2),
                                                        ("data.image_size=32", 1)]
    assert rows[1]["clean_test_acc_mean"] == 0.98


@pytest.mark.parametrize("change,column,shown", [
    ({"eps": 16 / 255}, "epsilon", "16/255"),
    ({"victim_epochs": 30}, "victim_epochs", "30"),  # the debug run beside a 2-epoch sweep
    ({"rule": "sqrt", "batch": 128}, "lr_scaling", "sqrt"),
    ({"k": 4}, "num_clusters", "4"),
])
def test_different_configs_are_different_rows_never_averaged(tmp_path, change, column, shown):
    runs = tmp_path / "runs"
    base = {"batch": 128} if "rule" in change else {}
    fake_run(runs, "a", seed=0, unl=0.2, **base)
    fake_run(runs, "b", seed=1, unl=0.8, **{**base, **change})  # another seed AND config
    rows = rows_of(runs)
    assert [r["seeds"] for r in rows] == [1, 1]
    assert sorted(r["unlearnable_test_acc_mean"] for r in rows) == [0.2, 0.8]
    assert len({r["config"] for r in rows}) == 2
    assert len({r[column] for r in rows}) == 2
    md = markdown(rows, {})
    assert len(table_rows(md)) == 2 and any(f"| {shown} |" in line for line in table_rows(md))


def test_the_config_digest_is_the_same_config_in_any_report(tmp_path):
    fake_run(tmp_path / "one", "s0", seed=0)
    fake_run(tmp_path / "two" / "deeper", "s7", seed=7)  # another seed, folder and name
    fake_run(tmp_path / "three", "s0", seed=0, victim_epochs=9)
    one, two, three = (rows_of(tmp_path / n)[0]["config"] for n in ("one", "two", "three"))
    assert one == two != three


def test_values_an_older_results_json_lacks_are_a_dash(tmp_path):
    runs = tmp_path / "runs"
    fake_run(runs, "old", eps=None, k=None, victim_epochs=None, num_classes=None,
             effective_lr=False)
    (row,) = rows_of(runs)
    assert row["epsilon"] is row["num_clusters"] is row["victim_epochs"] is None
    assert row["effective_lr"] is row["num_classes"] is None
    (line,) = table_rows(markdown([row], {}))
    assert "| none | 1 | " + row["config"] + " | - | - | - | - | 0.9000 ± n/a |" in line
    assert "Chance level" not in markdown([row], {})


def test_eps_is_shown_in_pixel_levels():
    assert [eps_255(e) for e in (8 / 255, 16 / 255, 0.03, None)] == ["8/255", "16/255",
                                                                      "7.65/255", "-"]


def test_the_latex_table_escapes_text_and_has_one_row_per_config(tmp_path):
    runs = tmp_path / "runs"
    for seed in (0, 1):
        fake_run(runs, f"s16-{seed}", seed=seed, unl=0.5 + 0.1 * seed, image_size=16)
    fake_run(runs, "s32", image_size=32)
    fake_run(runs, "eps16", eps=16 / 255)
    rows = rows_of(runs)
    tex = latex(rows, {"sw/x": "not run"})
    lines = tex.splitlines()
    body = lines[lines.index(r"\midrule") + 1:lines.index(r"\bottomrule")]
    assert len(body) == len(rows) == 3
    assert lines.index(r"\toprule") < lines.index(r"\midrule") < lines.index(r"\bottomrule")
    assert lines[lines.index(r"\toprule") - 1].startswith(r"\begin{tabular}{")
    assert lines[lines.index(r"\bottomrule") + 1] == r"\end{tabular}"
    assert "data.image\\_size=16" in tex and "data.image_size" not in tex
    assert all(line.count(" & ") == lines[lines.index(r"\toprule") + 1].count(" & ")
               for line in body)  # every row has the head's columns
    assert r"$0.550 \pm 0.071$" in tex and "16/255" in tex
    assert "% 1 missing or failed points, in no row: see report.md" in tex


def test_tex_escape_of_every_special_character():
    assert tex_escape("a_b 5% R&D #1 $x {y} ~z ^w \\v") == (
        r"a\_b 5\% R\&D \#1 \$x \{y\} \textasciitilde{}z \textasciicircum{}w "
        r"\textbackslash{}v")
    assert tex_escape("two\nlines") == "two lines"


def test_the_batch_plot_draws_one_line_per_lr_rule_eps_and_k(tmp_path):
    runs = tmp_path / "runs"
    for rule in ("none", "sqrt"):  # two lr rules at the same batches: a sawtooth if joined
        for batch in (32, 64, 128):
            for seed in (0, 1):
                fake_run(runs, f"{rule}-b{batch}-s{seed}", rule=rule, batch=batch, seed=seed)
    lines = batch_lines(rows_of(runs))
    assert sorted(line.label for line in lines) == ["lr none", "lr sqrt"]
    for line in lines:
        assert len({r["lr_scaling"] for r in line.rows}) == 1
        assert [r["global_batch_size"] for r in line.rows] == [32, 64, 128]
        assert all(r["seeds"] == 2 and len(r["_unlearnable_runs"]) == 2 for r in line.rows)

    for eps in (8, 16):  # eps and K too: each value its own line, named in its label
        fake_run(runs, f"eps{eps}", batch=32, eps=eps / 255, k=4)
    labels = sorted(line.label for line in batch_lines(rows_of(runs)))
    assert labels == ["lr none, eps 16/255, K 4", "lr none, eps 8/255, K 10",
                      "lr none, eps 8/255, K 4", "lr sqrt, eps 8/255, K 10"]


def test_one_config_is_one_unlabelled_line(tmp_path):
    for batch in (32, 64):
        fake_run(tmp_path, f"b{batch}", batch=batch)
    (line,) = batch_lines(rows_of(tmp_path))
    assert line.label == "" and len(line.rows) == 2


def test_chance_comes_from_results_json_else_the_runs_shards(tmp_path):
    fake_run(tmp_path / "new", "r", num_classes=7)
    assert chance(rows_of(tmp_path / "new")) == pytest.approx(1 / 7)
    old = fake_run(tmp_path / "old", "r", num_classes=None)
    assert chance(rows_of(tmp_path / "old")) is None  # nothing says: no chance line
    (old / "unlearnable").mkdir()
    (old / "unlearnable" / "meta.json").write_text(json.dumps({"classes": list("abcd")}))
    assert chance(rows_of(tmp_path / "old")) == pytest.approx(1 / 4)


def test_a_one_run_row_shows_the_spread_over_its_victims_as_the_run_printed_it(tmp_path):
    """The issue's case: the run printed clean 0.9444 ± 0.0962 over 3 victims on 30 test
    images, and the report said ± n/a."""
    from hpcue.evaluation.metrics import seed_summary
    from hpcue.pipeline import _acc

    runs = tmp_path / "runs"
    d = fake_run(runs, "one", clean=0.9444, unl=0.3, rand=0.8)
    arms = {"clean": [1.0, 0.8333, 1.0], "uc": [0.2, 0.4, 0.3], "random": [0.8, 0.7, 0.9],
            "uc+jpeg10": [0.3, 0.5, 0.4]}
    victims = {arm: seed_summary(values, 0.001, 30) for arm, values in arms.items()}
    result = json.loads((d / "results.json").read_text())
    result |= {"victims": victims, "baselines": {"random": victims["random"]},
               "worst_case_defense": "uc+jpeg10", "worst_case_unlearnable_test_acc": 0.4}
    (d / "results.json").write_text(json.dumps(result))
    (row,) = rows_of(runs)
    (line,) = table_rows(markdown([row], {}))
    for column, arm in (("clean_test_acc", "clean"), ("unlearnable_test_acc", "uc"),
                        ("random_test_acc", "random"),
                        ("worst_case_unlearnable_test_acc", "uc+jpeg10")):
        printed = _acc(victims[arm]).split(" (n=")[0]  # "mean ± std" as `hpcue run` ends with
        assert printed.split(" ± ")[1] != "n/a"
        assert row[f"{column}_std"] == victims[arm]["std"]
        assert f"| {row[f'{column}_mean']:.4f} ± {printed.split(' ± ')[1]} |" in line
    assert "0.9444 ± 0.0962" in line
    # one victim seed: the run printed n/a, and so does the report
    result["victims"]["clean"] = seed_summary([0.9], 0.001, 30)
    (d / "results.json").write_text(json.dumps(result))
    (row,) = rows_of(runs)
    assert row["clean_test_acc_std"] is None and "0.9444 ± n/a" in table_rows(
        markdown([row], {}))[0]
