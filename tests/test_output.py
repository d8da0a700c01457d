"""What a finished run says and keeps: hpcue's own lines and one labelled bar per training on
the terminal (Lightning's banners, tips and hints in the run's log file instead), and the
provenance of every stage record and of results.json.
"""

from __future__ import annotations

import json
import re
import socket

from hpcue import __version__
from hpcue.io import file_sha256
from hpcue.stages.rundir import STAGES
from tests.conftest import hpcue

BARS = ("stage 1 generators (K=10)",
        "victims (2 training sets x 1 seeds)")
NOISE = ("GPU available", "TPU available", "Tip:", "litlogger", "srun", "deprecated",
         "Trainer.fit", "Loading `train_dataloader`", "Validation", "Testing")


def test_the_terminal_holds_hpcue_lines_and_one_labelled_bar_per_training(finished_run):
    out, proc = finished_run
    printed = proc.stdout + proc.stderr
    for noise in NOISE:
        assert noise not in printed, noise
    # stderr: only hpcue's own bars of work that is not a training (no warnings, no hints)
    assert all(line.startswith(("prepare digits:", "features:"))
               for line in re.split(r"[\r\n]", proc.stderr) if line.strip()), proc.stderr
    lines = [line for line in re.split(r"[\r\n]", proc.stdout) if line.strip()]
    bars = [line for line in lines if line.startswith(BARS)]
    for label in BARS:
        assert any(line.startswith(f"{label}: epoch 2/2") for line in bars), label
    # Lightning's unlabelled bars
    assert not any(line.startswith(("Epoch", "Training")) for line in lines)
    own = [line for line in lines if line not in bars]
    # hpcue's own lines, then the closing summary table
    summary = own.index(next(line for line in own if line.startswith("hpcue results")))
    assert all(line.startswith("[hpcue]") for line in own[:summary]), own[:summary]
    table = own[summary + 1:]
    verdict = table.index(next(line for line in table if line.startswith("Verdict: ")))
    assert all(line.startswith("  ") for line in table[:verdict])
    # one victim seed, no baselines: the run says it cannot judge, and what it needs
    assert table[verdict].startswith("Verdict: NO VERDICT")
    assert "± n/a (n=1)" in proc.stdout and "± 0.0000" not in proc.stdout
    # what the terminal no longer shows is kept in the run's log file
    log = (out / "logs" / "lightning.log").read_text()
    assert "GPU available" in log and "srun" in log


def test_every_record_and_results_json_say_what_made_them(finished_run):
    out, _ = finished_run
    results = json.loads((out / "results.json").read_text())
    prov = results["provenance"]
    assert prov["hpcue_version"] == __version__
    assert re.fullmatch(r"[0-9a-f]{40}", prov["git_commit"])  # the tests run from a checkout
    assert prov["hosts"] == [socket.gethostname()] and prov["world_size"] == 1
    assert list(prov["devices"].values()) == [1] and next(iter(prov["devices"])).startswith("cpu")
    for key in ("python", "torch", "lightning", "launcher", "num_nodes"):
        assert prov[key], key
    assert prov["started"] <= prov["finished"]  # ISO 8601, UTC: ordered as text
    assert prov["data_meta_sha256"] == file_sha256(out / "data" / "meta.json")
    assert re.fullmatch(r"[0-9a-f]{64}", prov["config_sha256"])
    records = {s: json.loads((out / "stages" / f"{s}.json").read_text()) for s in STAGES}
    assert prov["started"] == records["cluster"]["provenance"]["started"]
    assert prov["finished"] == records["evaluate"]["provenance"]["finished"]
    for stage, record in records.items():
        assert record["provenance"]["config_sha256"] == prov["config_sha256"], stage
        assert record["provenance"]["started"] <= record["provenance"]["finished"], stage
    # units in the keys: a fraction of the pixel range, and 8-bit levels
    assert results["epsilon_255"] == round(results["epsilon"] * 255, 3)
    assert 0 < results["max_abs_pixel_change_255"] <= round(results["epsilon_255"])
    assert "max_abs_pixel_change" not in results
    assert results["num_classes"] == 10


def test_a_finished_run_exports_from_the_command_line(finished_run, tmp_path):
    out, _ = finished_run
    dest = tmp_path / "published"
    proc = hpcue("export", str(out), "--format", "imagefolder", "--out", str(dest))
    manifest = json.loads((dest / "manifest.json").read_text())
    assert proc.stdout.strip() == (f"[hpcue] exported {manifest['images']} images "
                                   f"(imagefolder) to {dest}")
    assert manifest["images"] == len(list((dest / "train").rglob("*.png"))) > 0
    assert (dest / "README.md").is_file()
    again = hpcue("export", str(out), "--format", "npz", "--out", str(dest), check=False)
    assert again.returncode == 2 and str(dest) in again.stderr  # never overwritten
