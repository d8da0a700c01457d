"""The floors hold: the import-linter contract passes, and fails on an upward import.

Also: the CLI imports no torch before it limits threads, and reports only hpcue's own errors
(and the system's) as one line, while a bug keeps its traceback.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hpcue import cli, pipeline
from hpcue.errors import ConfigError, HpcueError
from tests.conftest import REPO

LINT = str(Path(sys.executable).parent / "lint-imports")


def _lint(cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([LINT, "--config", str(cwd / "pyproject.toml")], cwd=cwd,
                          env={"PYTHONPATH": str(cwd), "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, timeout=300)


def test_layers_contract_is_kept():
    proc = _lint(REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 kept, 0 broken" in proc.stdout


@pytest.mark.parametrize("module,upward", [
    ("hpcue/data/shards.py", "from hpcue.stages.rundir import RunDir"),
    ("hpcue/models/generator.py", "from hpcue.training.batches import UnitBatches"),
    ("hpcue/training/trainer.py", "from hpcue.config import RuntimeConfig"),
])
def test_an_upward_import_breaks_the_contract(tmp_path, module, upward):
    shutil.copytree(REPO / "hpcue", tmp_path / "hpcue",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    target = tmp_path / module
    target.write_text(target.read_text() + f"\n{upward}  # noqa: E402\n")
    proc = _lint(tmp_path)
    assert proc.returncode != 0
    assert "0 kept, 1 broken" in proc.stdout
    assert module.removesuffix(".py").replace("/", ".") in proc.stdout


def test_cli_import_starts_no_torch():
    """OMP_NUM_THREADS is set by the CLI before torch starts its thread pools."""
    code = "import sys, hpcue.cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "False"


def _fail_with(monkeypatch, exc: Exception) -> None:
    def boom(*args, **kwargs):
        raise exc

    monkeypatch.setattr(pipeline, "start", lambda cfg: None)
    monkeypatch.setattr(pipeline, "run_pipeline", boom)


def test_cli_reports_hpcue_errors_as_one_line(monkeypatch, capsys, tmp_path):
    _fail_with(monkeypatch, ConfigError("train.epochs: bad"))
    assert cli.main(["run", "--out", str(tmp_path / "r")]) == 2
    assert capsys.readouterr().err.strip() == "hpcue: error: train.epochs: bad"
    assert issubclass(ConfigError, HpcueError)


def test_cli_lets_a_bug_show_its_traceback(monkeypatch, tmp_path):
    _fail_with(monkeypatch, ValueError("a bug, not bad input"))
    with pytest.raises(ValueError, match="a bug"):
        cli.main(["run", "--out", str(tmp_path / "r")])


def test_user_errors_found_in_review_are_hpcue_errors(tmp_path):
    """Inputs that once ended in a traceback: each is now an HpcueError naming the problem."""
    import zipfile

    from hpcue.config import load_config
    from hpcue.data.importers.digits import load_digits_splits
    from hpcue.data.importers.medmnist_npz import load_medmnist_split
    from hpcue.io import read_json

    with pytest.raises(ConfigError, match="seed"):
        load_config(None, ["seed=-1"])
    with pytest.raises(HpcueError, match="test fraction 0.001"):
        load_digits_splits(16, 0.001, 0)
    damaged = tmp_path / "results.json"
    damaged.write_text('{"clean_test_acc": 0.9')
    with pytest.raises(HpcueError, match=f"{damaged}: not valid JSON"):
        read_json(damaged)
    npz = tmp_path / "bloodmnist.npz"
    with zipfile.ZipFile(npz, "w") as z:
        z.writestr("train_images.npy", b"\x93NUMPY\x01\x00v\x00garbage" + b" " * 200)
        z.writestr("train_labels.npy", b"x")
    with pytest.raises(HpcueError, match="not a readable .npz file"):
        load_medmnist_split(npz, "bloodmnist", "train", 28)


def test_prepare_options_found_in_review_are_one_clear_error(tmp_path):
    from hpcue.data.options import PrepareOptions
    from hpcue.data.prepare import prepare
    from tests import fabricate

    with pytest.raises(HpcueError, match="--seed must be in 0..2\\*\\*32-1, got -1"):
        prepare("digits", None, tmp_path / "a", PrepareOptions(image_size=16, seed=-1))
    root = fabricate.image_folder(tmp_path / "raw", per_class=2)  # 4 images, 2 classes
    with pytest.raises(HpcueError, match="4 images in 2 classes cannot be split with test "
                                         "fraction 0.1"):
        prepare("imagefolder", root, tmp_path / "b",
                PrepareOptions(image_size=16, test_fraction=0.1))
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()  # nothing written


def test_the_architecture_names_every_module():
    """docs/architecture.md says where each kind of thing lives: every module of a package is
    named in its package's row of the rooms table, every top-level module in the document."""
    doc = (REPO / "docs" / "architecture.md").read_text()
    rows = {m.group(1): m.group(0) for m in re.finditer(r"^\| `(\w+)/` \|.*$", doc, re.M)}
    missing = []
    for path in sorted((REPO / "hpcue").rglob("*.py")):
        module = path.relative_to(REPO / "hpcue")
        if path.name == "__init__.py" or module.parts[0].startswith("_"):
            continue
        where = rows.get(module.parts[0], "") if len(module.parts) > 1 else doc
        if not re.search(r"`[^`]*(?<![\w.])" + re.escape(path.name) + r"\b[^`]*`", where):
            missing.append(str(module))
    assert not missing, f"docs/architecture.md does not name: {', '.join(missing)}"
