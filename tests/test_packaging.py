"""An installed hpcue carries its run configs, machine profiles, sweep specs and job templates,
and sweeps from any directory: a wheel built here (offline), installed into a fresh folder, renders
every shipped spec by name and a spec of every profile, and runs one point of the digits sweep,
all from a folder outside the repository; an editable install reads the repository's own files.

The builds run on a copy of what they read, so nothing is written into the repository (build/,
*.egg-info) and two test runs never share a build folder.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
import yaml

from hpcue.sweep.render import TEMPLATES
from tests.conftest import ACCOUNT, REPO, TINY, shipped_account

#: what building hpcue reads (pyproject.toml: the readme, the packages, configs/ and jobs/)
SOURCES = ("pyproject.toml", "README.md", "hpcue", "configs", "jobs")
PROFILES = sorted(p.stem for p in (REPO / "configs" / "machines").glob("*.yaml"))
SPECS = sorted(p.stem for p in (REPO / "configs" / "sweeps").glob("*.yaml"))
#: the profile each shipped spec runs on
SPEC_MACHINES = {spec: yaml.safe_load((REPO / "configs" / "sweeps" / f"{spec}.yaml").read_text())[
    "machine"] for spec in SPECS}


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("HPCUE_MACHINES", "PYTHONPATH")}
    return {**env, "OMP_NUM_THREADS": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1", **extra}


def _run(args: list[str], cwd: Path, env: dict[str, str],
         timeout: int = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(args)}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """A copy of the repository's build inputs."""
    root = tmp_path_factory.mktemp("source")
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, root / name,
                            ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(REPO / name, root / name)
    return root


@pytest.fixture(scope="module")
def wheel(source, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
          "--no-index", "-w", str(out), str(source)], source, _env())
    (built,) = out.glob("hpcue-*.whl")
    return built


@pytest.fixture(scope="module")
def site(wheel, tmp_path_factory) -> Path:
    """The wheel installed into a fresh folder (its dependencies: this environment's)."""
    target = tmp_path_factory.mktemp("site")
    _run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--target",
          str(target), str(wheel)], target, _env())
    return target


def _installed(site: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``python -m hpcue.cli ARGS`` of the installed wheel, from ``cwd`` (not the repository)."""
    return _run([sys.executable, "-m", "hpcue.cli", *args], cwd, _env(PYTHONPATH=str(site)))


def _needed_configs(spec: Path) -> set[str]:
    """The configs a shipped spec names (shipped ones, by name) and their ``base:`` chains, as
    paths under configs/."""
    needed = set()
    for entry in yaml.safe_load(spec.read_text())["configs"]:
        path = REPO / "configs" / f"{entry}.yaml"
        while True:
            needed.add(path.resolve().relative_to(REPO / "configs").as_posix())
            base = yaml.safe_load(path.read_text()).get("base")
            if base is None:
                break
            path = path.parent / base
    return needed


def test_the_wheel_holds_every_module_template_profile_spec_and_config(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {p.relative_to(REPO).as_posix() for p in (REPO / "hpcue").rglob("*.py")}
    assert modules <= names, sorted(modules - names)  # the package list misses none
    weights = {p.relative_to(REPO).as_posix() for p in (REPO / "hpcue" / "models" / "weights")
               .iterdir()}
    assert {"hpcue/models/weights/small_cnn-mnist5k.pt",
            "hpcue/models/weights/small_cnn-mnist5k.json"} <= weights <= names
    for template in TEMPLATES.values():
        assert f"hpcue/_jobs/{template}" in names
    for profile in PROFILES:
        assert f"hpcue/_configs/machines/{profile}.yaml" in names
    needed = set()
    for spec in SPECS:
        assert f"hpcue/_configs/sweeps/{spec}.yaml" in names
        needed |= _needed_configs(REPO / "configs" / "sweeps" / f"{spec}.yaml")
    assert {"debug-digits.yaml", "paper-pathmnist.yaml", "base/paper.yaml"} <= needed
    for config in needed | {p.relative_to(REPO / "configs").as_posix()
                            for p in (REPO / "configs").rglob("*.yaml")}:
        assert f"hpcue/_configs/{config}" in names, config


def test_the_installed_hpcue_is_the_one_imported_and_reads_its_own_files(site, tmp_path):
    proc = _run([sys.executable, "-c", "import hpcue; from hpcue.sweep import shipped; "
                 "print(hpcue.__file__, shipped.configs_dir(), shipped.jobs_dir())"],
                tmp_path, _env(PYTHONPATH=str(site)))
    module, configs, jobs = proc.stdout.split()
    assert Path(module) == site / "hpcue" / "__init__.py"
    assert (Path(configs), Path(jobs)) == (site / "hpcue" / "_configs", site / "hpcue" / "_jobs")


def _scheduler(profile: str) -> str:
    return yaml.safe_load((REPO / "configs" / "machines" / f"{profile}.yaml").read_text())[
        "scheduler"]


def _bash_n(scripts: list[Path]) -> None:
    assert scripts
    for script in scripts:
        proc = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert proc.returncode == 0, f"{script}: {proc.stderr}"


@pytest.mark.parametrize("spec", SPECS)
def test_the_installed_hpcue_renders_every_shipped_spec_by_name_elsewhere(site, tmp_path, spec):
    scheduler = _scheduler(SPEC_MACHINES[spec])
    account = shipped_account(spec)  # the specs name none; their machine may need one
    proc = _installed(site, "sweep", "render", spec, "--scheduler", scheduler, "--out", "out",
                      *(["--account", account] if account else []), cwd=tmp_path)
    assert f"{scheduler} scripts into out" in proc.stdout
    scripts = sorted((tmp_path / "out").iterdir())
    _bash_n(scripts)
    for script in scripts:  # the installed configs, by their absolute paths
        assert f" --config {site / 'hpcue' / '_configs'}/" in script.read_text(), script


def test_every_profile_is_rendered_by_the_installed_hpcue():
    (mark,) = [m for m in test_the_installed_hpcue_renders_a_spec_of_every_other_profile
               .pytestmark if m.name == "parametrize"]
    assert set(SPEC_MACHINES.values()) | set(mark.args[1]) == set(PROFILES)


@pytest.mark.parametrize("profile", sorted(set(PROFILES) - set(SPEC_MACHINES.values())))
def test_the_installed_hpcue_renders_a_spec_of_every_other_profile(site, tmp_path, profile):
    """A user's own spec (outside the repository) on each profile no shipped spec uses, naming
    a shipped config; --scheduler left to the profile."""
    data = yaml.safe_load((REPO / "configs" / "sweeps" / "digits-local.yaml").read_text())
    data.update(name=f"on-{profile}", machine=profile, account=ACCOUNT, ranks_per_node=2,
                global_batch_sizes=[32], seeds=[0])
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(data))
    proc = _installed(site, "sweep", "render", "spec.yaml", "--out", "out", cwd=tmp_path)
    assert f"rendered 2 {_scheduler(profile)} scripts into out" in proc.stdout
    scripts = sorted((tmp_path / "out").iterdir())
    _bash_n(scripts)
    assert f"--config {site / 'hpcue' / '_configs' / 'debug-digits.yaml'} " in \
        scripts[-1].read_text()


def test_the_installed_hpcue_runs_one_point_of_the_digits_sweep_elsewhere(site, tmp_path):
    data = yaml.safe_load((REPO / "configs" / "sweeps" / "digits-local.yaml").read_text())
    tiny = {item.split("=")[0]: item for item in data["overrides"] + TINY}
    data.update(name="tiny", global_batch_sizes=[32], seeds=[0], overrides=list(tiny.values()))
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(data))
    _installed(site, "sweep", "local", "tiny.yaml", cwd=tmp_path)
    point = tmp_path / "runs" / "tiny" / "digits-b32-s0"
    assert (point / "results.json").is_file()
    assert (tmp_path / "runs" / "tiny" / "sweep.json").is_file()


def test_an_editable_install_reads_the_repositorys_own_files(source, tmp_path):
    """setuptools' editable finder maps hpcue._configs and hpcue._jobs to configs/ and jobs/
    themselves: a file added there is found without reinstalling."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = Path(_run([str(python), "-c", "import sysconfig; "
                         "print(sysconfig.get_paths()['purelib'])"], tmp_path, _env()).stdout
                   .strip())
    # this environment's packages (torch, setuptools, pip) as a plain path: its own .pth files,
    # and so its own editable hpcue, are not read from there
    (purelib / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run([str(python), "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
          "-e", str(source)], tmp_path, _env())
    proc = _run([str(python), "-c", "import hpcue; from hpcue.sweep import shipped; "
                 "print(hpcue.__file__, shipped.configs_dir(), shipped.jobs_dir())"],
                tmp_path, _env())
    assert proc.stdout.split() == [str(source / "hpcue" / "__init__.py"),
                                   str(source / "configs"), str(source / "jobs")]
    shutil.copy(source / "configs" / "machines" / "local.yaml",
                source / "configs" / "machines" / "added.yaml")
    data = yaml.safe_load((source / "configs" / "sweeps" / "digits-local.yaml").read_text())
    data.update(machine="added", global_batch_sizes=[32], seeds=[0])
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(data))
    proc = _run([str(python), "-m", "hpcue.cli", "sweep", "render", "spec.yaml", "--out", "out"],
                tmp_path, _env())
    assert "rendered 2 slurm scripts into out" in proc.stdout
    assert f"--config {source / 'configs' / 'debug-digits.yaml'} " in \
        (tmp_path / "out" / "digits-b32-s0.sbatch").read_text()
