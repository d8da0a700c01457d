"""What a finished run says and keeps: hpcue's own lines and one labelled bar per training on
the terminal, one plain line an epoch in a batch log (Lightning's banners, tips and hints in the
run's log file instead), and the provenance of every stage record and of results.json.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import socket
import struct
import subprocess
import sys
import termios
import tty
from pathlib import Path

from hpcue import __version__
from hpcue.io import file_sha256
from hpcue.stages.rundir import STAGES
from tests.conftest import REPO, hpcue, tiny_sets

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
    # the speed options in force: every auto is off on a CPU (training/speed.py)
    assert prov["speed"] == {"channels_last": False, "compile": [], "fused_optimizer": False,
                             "pin_memory": False, "cudnn_benchmark": False}
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
    # the training split and the test split (protected by nearest cluster): every image
    assert manifest["images"] == len(list(dest.rglob("*.png"))) > 0
    assert manifest["splits"]["train"] == len(list((dest / "train").rglob("*.png"))) > 0
    assert manifest["splits"]["test"] == len(list((dest / "test").rglob("*.png"))) > 0
    assert (dest / "README.md").is_file()
    again = hpcue("export", str(out), "--format", "npz", "--out", str(dest), check=False)
    assert again.returncode == 2 and str(dest) in again.stderr  # never overwritten


#: every training of a run whose surrogate is learned from the images, by its label
TRAININGS = ("surrogate (rotation pretraining)", "stage 1 generators (K=10)",
             "victims (2 training sets x 1 seeds)")
SELF_SUPERVISED = ["--set", "surrogate.pretraining=self_supervised"]
#: what tqdm draws a bar with: its blocks, its ASCII fallback's frame, its rate
BAR_MARKS = ("\r", "%|", "it/s", "img/s]", *"▏▎▍▌▋▊▉█")


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "hpcue.cli", *args]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def test_a_batch_log_gets_one_ascii_line_an_epoch_per_training_and_no_bars(tmp_path):
    # each stage as a job step would run it, stdout and stderr into one log file, as Slurm's
    out, log = tmp_path / "run", tmp_path / "slurm-1.out"
    with log.open("ab") as sink:
        for stage in STAGES:
            proc = subprocess.run(_cli(stage, "--out", str(out), *tiny_sets(), *SELF_SUPERVISED),
                                  cwd=REPO, env=_env(), stdout=sink, stderr=subprocess.STDOUT,
                                  timeout=600)
            assert proc.returncode == 0, log.read_bytes()[-3000:]
    text = log.read_bytes().decode("ascii")  # a cut line cannot split a character
    for mark in BAR_MARKS:
        assert mark not in text, mark
    lines = text.splitlines()
    for label in TRAININGS:
        epochs = [line for line in lines if line.startswith(label)]
        assert [line.split(",")[0] for line in epochs] == [f"{label}: epoch {i}/2"
                                                           for i in (1, 2)], lines
        for line in epochs:  # the loss the bar shows, the epoch's mean; the rate where known
            assert re.fullmatch(rf"{re.escape(label)}: epoch \d/2, \w+ [0-9.e+-]+"
                                rf", \d+ images/s", line), line
    assert all(line.startswith(("[hpcue]", *TRAININGS)) for line in lines), lines


def _on_a_terminal(args: list[str]) -> tuple[int, str]:
    """Run ``args`` with stdout and stderr on a pseudo-terminal (120 columns, output as
    written: no newline turned into a carriage return and a newline); its exit code and
    output."""
    ours, theirs = pty.openpty()
    tty.setraw(theirs)
    fcntl.ioctl(theirs, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    proc = subprocess.Popen(args, cwd=REPO, env=_env(), stdin=subprocess.DEVNULL,
                            stdout=theirs, stderr=theirs)
    os.close(theirs)
    chunks = []
    while True:
        try:
            chunk = os.read(ours, 65536)
        except OSError:  # EIO: every end of the terminal on their side is closed
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(ours)
    return proc.wait(timeout=600), b"".join(chunks).decode(errors="replace")


def test_a_terminal_keeps_its_live_labelled_bars(tmp_path: Path):
    code, text = _on_a_terminal(_cli("cluster", "--out", str(tmp_path / "run"), *tiny_sets(),
                                     *SELF_SUPERVISED))
    assert code == 0, text[-3000:]
    assert "\r" in text and "%|" in text  # redrawn in place
    label = TRAININGS[0]
    bars = [part for part in re.split(r"[\r\n]", text) if part.startswith(label)]
    assert any(part.startswith(f"{label}: epoch 2/2") and "%|" in part for part in bars), bars
    assert not any(part.startswith(f"{label}: epoch 2/2,") for part in bars)  # no plain line
