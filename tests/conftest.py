"""Shared fixtures: tiny configs and a CLI runner that starts a real subprocess."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]

# Tiny sizes: every stage runs, in seconds, on a 2-core CPU. One victim seed and no baselines
# or defenses: the full victim protocol runs once, in tests/test_end_to_end.py.
TINY = [
    "data.image_size=16", "surrogate.pretrain_epochs=2", "cluster.n_init=2",
    "train.epochs=2", "train.generator_width=4", "train.generator_blocks=1",
    "victim.epochs=2", "victim.seeds=1", "victim.baselines=[]", "victim.defenses=[]",
]
# the whole evaluation protocol: seeds, both baselines, and a defense of each path (grayscale:
# not trained on gray digits; jpeg10, bitdepth: data; cutmix: class probabilities; adversarial:
# PGD inside the training step)
FULL_PROTOCOL = ["victim.seeds=2", "victim.baselines=[random, classwise]",
                 "victim.defenses=[grayscale, jpeg10, bitdepth, cutmix, adversarial]"]
DEFENDED = ("uc+grayscale", "uc+jpeg10", "uc+bitdepth", "uc+cutmix", "uc+adversarial")
#: the account a test gives a sweep whose machine needs one: the shipped specs name none (a
#: placeholder there passed every check), and render refuses placeholders such as ABC123
ACCOUNT = "hpcue-test"


def shipped_account(spec: str) -> str | None:
    """``ACCOUNT`` for a shipped spec (``paper-summit``, ``x.yaml``) whose machine profile needs
    an account, None for one that needs none (its scripts, and goldens, name no account)."""
    import yaml

    name = spec.removesuffix(".yaml")
    machine = yaml.safe_load((REPO / "configs" / "sweeps" / f"{name}.yaml").read_text())["machine"]
    profile = yaml.safe_load((REPO / "configs" / "machines" / f"{machine}.yaml").read_text())
    return ACCOUNT if profile.get("account_required") else None

torch.set_num_threads(1)


def hpcue(*args: str, cwd: Path | None = None, env: dict | None = None,
          check: bool = True) -> subprocess.CompletedProcess:
    """Run the real CLI in a subprocess (Lightning may re-run sys.argv; pytest must not be it)."""
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    proc = subprocess.run([sys.executable, "-m", "hpcue.cli", *args], cwd=cwd or REPO,
                          env=full_env, capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"hpcue {' '.join(args)} failed ({proc.returncode}):\n"
                             f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def tiny_sets(extra: list[str] | None = None) -> list[str]:
    out: list[str] = []
    for item in TINY + (extra or []):
        out += ["--set", item]
    return out


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """One tiny ``hpcue run`` and what it printed, shared by every test that needs a finished
    run directory: read it, or copy it before changing anything."""
    out = tmp_path_factory.mktemp("finished") / "run"
    return out, hpcue("run", "--out", str(out), *tiny_sets())


def stop_after_first_epoch(proc: subprocess.Popen, last: Path) -> str:
    """SIGTERM (a job's wall time) to ``proc`` once its epoch checkpoint ``last`` is past the
    first epoch; returns what it printed on stderr. It must not finish before that."""
    deadline = time.monotonic() + 300
    while True:
        assert proc.poll() is None and time.monotonic() < deadline, "finished before the stop"
        if last.is_file():
            try:
                if torch.load(last, weights_only=True)["epoch"] >= 1:
                    break
            except Exception:  # being written
                pass
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    return proc.communicate(timeout=120)[1]
