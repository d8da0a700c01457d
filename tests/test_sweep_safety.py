"""Nothing injected into a job script, nothing lost from a sweep: spec and profile values that
would add lines to a script, empty or repeated axes, results that cannot be reported, and
points that failed or stopped."""

from __future__ import annotations

import csv
import json
import re
import sys
from pathlib import Path
from string import Template

import pytest
import yaml

from hpcue.errors import ConfigError, InputError
from hpcue.sweep import submit as submit_module
from hpcue.sweep.points import Point, Sweep, load_sweep
from hpcue.sweep.render import FIELDS, TEMPLATES, cluster_jobs, render, script_name
from hpcue.sweep.report import report
from hpcue.sweep.shipped import jobs_dir
from hpcue.sweep.submit import run_local
from tests.conftest import ACCOUNT, REPO, hpcue, shipped_account

GOLDEN = REPO / "tests" / "golden"
SWEEPS = REPO / "configs" / "sweeps"
MACHINES = REPO / "configs" / "machines"
INJECTED = "abc123\ntouch /tmp/hpcue-injected\n#"
#: a spec of each scheduler: digits on the local Slurm profile, and on Summit's LSF
BASES = {"slurm": {"machine": "local"},
         "lsf": {"machine": "summit", "account": ACCOUNT, "ranks_per_node": 2}}


@pytest.fixture(autouse=True)
def _repo_cwd(monkeypatch):
    # scripts name paths under the current directory relative to it: the goldens' configs/...
    monkeypatch.chdir(REPO)


def _spec(tmp_path: Path, scheduler: str = "slurm", **changes) -> Path:
    data = yaml.safe_load((SWEEPS / "digits-local.yaml").read_text())
    data.update({**BASES[scheduler], "global_batch_sizes": [32], "seeds": [0], **changes})
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _machines(tmp_path: Path, scheduler: str, **changes) -> Path:
    """A machines folder holding the scheduler's profile, changed, as ``evil.yaml``."""
    data = yaml.safe_load((MACHINES / f"{BASES[scheduler]['machine']}.yaml").read_text())
    data.update(changes)
    folder = tmp_path / "machines"
    folder.mkdir(exist_ok=True)
    (folder / "evil.yaml").write_text(yaml.safe_dump(data))
    return folder


# -- 1. nothing injected into a job script ---------------------------------------------------

@pytest.mark.parametrize("scheduler", ["slurm", "lsf"])
@pytest.mark.parametrize("key,value,message", [
    ("account", INJECTED, "account: 'abc123\\ntouch /tmp/hpcue-injected\\n#' is not a plain name"),
    ("account", "abc;id", "account: 'abc;id' is not a plain name: letters, digits, _ . + - only"),
    ("account", "$(id)", "account: '$(id)' is not a plain name"),
    ("account", "-x", "account: '-x' is not a plain name"),
    ("name", "../escape", "name: '../escape' is not a plain name"),
    ("name", "..", "name: '..' is not a plain name"),
    ("name", "a\nb", "name: 'a\\nb' is not a plain name"),
    ("machine", "../../etc/x", "machine: '../../etc/x' is not a plain name"),
])
def test_injected_spec_values_are_refused_naming_file_key_and_value(tmp_path, scheduler, key,
                                                                     value, message):
    path = _spec(tmp_path, scheduler, **{key: value})
    with pytest.raises(ConfigError) as err:
        load_sweep(path)
    assert f"{path}: {message}" in str(err.value)


@pytest.mark.parametrize("scheduler,key,value", [
    ("slurm", "partition", "gpu\n#SBATCH --account=other"),
    ("slurm", "partition", "gpu;touch /tmp/hpcue-injected"),
    ("slurm", "partition", "$(touch /tmp/hpcue-injected)"),
    ("slurm", "partition", "`touch /tmp/hpcue-injected`"),
    ("slurm", "partition", "gpu,"),
    ("lsf", "queue", "batch\ntouch /tmp/hpcue-injected"),
    ("lsf", "queue", "batch;touch /tmp/hpcue-injected"),
    ("lsf", "queue", "$(touch /tmp/hpcue-injected)"),
    ("lsf", "queue", "`touch /tmp/hpcue-injected`"),
    ("lsf", "queue", "batch debug"),
    ("slurm", "name", "../evil"),
    ("lsf", "name", "../evil"),
])
def test_injected_profile_values_are_refused_naming_file_key_and_value(tmp_path, scheduler, key,
                                                                        value):
    machines = _machines(tmp_path, scheduler, **{key: value})
    with pytest.raises(ConfigError) as err:
        load_sweep(_spec(tmp_path, scheduler, machine="evil"), machines)
    assert f"{machines / 'evil.yaml'}: {key}: {value!r} is not a " in str(err.value)


@pytest.mark.parametrize("scheduler", ["slurm", "lsf"])
@pytest.mark.parametrize("key,value,message", [
    ("precision", "bf16-mixed\ntouch /tmp/hpcue-injected",
     "precision: Input should be '32-true', '16-mixed' or 'bf16-mixed'"),
    ("precision", "bf16-mixed; id", "precision: Input should be '32-true'"),
    ("cpus_per_task", "7\ntouch /tmp/hpcue-injected", "cpus_per_task: Input should be a valid "
                                                      "integer"),
    ("cpus_per_task", 0, "cpus_per_task: Input should be greater than or equal to 1"),
])
def test_a_profiles_precision_and_cores_are_one_of_their_values(tmp_path, scheduler, key, value,
                                                                message):
    """Both reach the script (the run command, SRUN_CPUS_PER_TASK and the launch line)."""
    machines = _machines(tmp_path, scheduler, **{key: value})
    with pytest.raises(ConfigError) as err:
        load_sweep(_spec(tmp_path, scheduler, machine="evil"), machines)
    assert f"{machines / 'evil.yaml'}: {message}" in str(err.value)


@pytest.mark.parametrize("scheduler", ["slurm", "lsf"])
@pytest.mark.parametrize("key,value", [
    ("setup", ["module load x", "echo ok\ntouch /tmp/hpcue-injected"]),
    ("setup", ["module load x\r"]),
    ("launch", "srun\ntouch /tmp/hpcue-injected;"),
])
def test_profile_shell_lines_are_trusted_but_one_line_each(tmp_path, scheduler, key, value):
    machines = _machines(tmp_path, scheduler, **{key: value})
    with pytest.raises(ConfigError, match=rf"evil.yaml: {key}.*holds a control character"):
        load_sweep(_spec(tmp_path, scheduler, machine="evil"), machines)


def test_plain_values_a_scheduler_takes_still_render(tmp_path):
    machines = _machines(tmp_path, "slurm", partition="gpu,debug_1", name="my-cluster.v2")
    sweep = load_sweep(_spec(tmp_path, machine="evil", account="proj_1.a+b-c"), machines)
    (path, _) = render(sweep, "slurm", tmp_path / "out", tmp_path / "runs")
    text = path.read_text()
    assert "#SBATCH --account=proj_1.a+b-c\n#SBATCH --partition=gpu,debug_1\n" in text


def _changed(sweep: Sweep, spec: dict | None = None, machine: dict | None = None) -> Sweep:
    """The sweep with values changed after loading (model_copy skips validation)."""
    return Sweep(sweep.spec.model_copy(update=spec or {}),
                 sweep.machine.model_copy(update=machine or {}), sweep.points, sweep.source)


@pytest.mark.parametrize("scheduler", ["slurm", "lsf"])
@pytest.mark.parametrize("spec,machine,message", [
    ({"account": INJECTED}, None, "account: 'abc123\\ntouch /tmp/hpcue-injected\\n#' is not"),
    ({"name": "../up"}, None, "name: '../up' is not a plain name"),
    (None, {"partition": "a;b", "queue": "a;b"}, "is not a "),
    (None, {"queue": "`id`", "partition": "`id`"}, "is not a "),
    (None, {"setup": ["ok", "a\nb"]}, "setup: 'a\\nb' holds a control character"),
    (None, {"launch": "srun\nid"}, "launch: 'srun\\nid' holds a control character"),
    (None, {"cpus_per_task": "7\nid"}, "cpus_per_task: '7\\nid' is not a positive int"),
])
def test_render_checks_every_value_again(tmp_path, scheduler, spec, machine, message):
    """A Sweep built or changed in code never went through loading's checks: render refuses
    its values before it writes anything."""
    sweep = load_sweep(_spec(tmp_path, scheduler))
    bad = _changed(sweep, spec, machine)
    with pytest.raises(ConfigError) as err:
        render(bad, scheduler, tmp_path / "out", tmp_path / "runs")
    assert message in str(err.value)
    assert not (tmp_path / "out").exists() and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("scheduler", ["slurm", "lsf"])
def test_render_refuses_a_point_name_or_runs_directory_a_directive_cannot_take(tmp_path,
                                                                              scheduler):
    sweep = load_sweep(_spec(tmp_path, scheduler))
    p = sweep.points[0]
    escaping = Sweep(sweep.spec, sweep.machine, [Point("../../x", p.config, p.overrides, p.nodes,
                                                       p.ranks_per_node, p.run_config)],
                     sweep.source)
    with pytest.raises(ConfigError, match=r"point: '../../x' is not a plain name"):
        render(escaping, scheduler, tmp_path / "out", tmp_path / "runs")
    for runs in ("my runs", "runs\n#", "runs%j", "runs;id"):
        with pytest.raises(InputError, match=r"--runs: job directory: '.*' cannot go into a "
                                             r"#SBATCH/#BSUB line"):
            render(sweep, scheduler, tmp_path / "out", tmp_path / runs)
    assert not (tmp_path / "out").exists()


def test_an_injected_spec_is_one_error_from_the_cli_and_nothing_is_rendered(tmp_path):
    path = _spec(tmp_path, account=INJECTED)
    proc = hpcue("sweep", "render", str(path), "--scheduler", "slurm", "--out",
                 str(tmp_path / "out"), "--runs", str(tmp_path / "runs"), check=False)
    assert proc.returncode == 2, proc.stderr
    assert "account: 'abc123\\ntouch /tmp/hpcue-injected\\n#' is not a plain name" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("scheduler", ["slurm", "lsf"])
@pytest.mark.parametrize("account", ["ABC123", "abc123", "changeme", "YOUR_ACCOUNT"])
def test_a_placeholder_account_is_refused_at_render_naming_the_spec_and_key(tmp_path, scheduler,
                                                                            account):
    """It passes every check of form; the scheduler would refuse every job, or charge a
    stranger's project. Loading still works (status reads no account)."""
    path = _spec(tmp_path, scheduler, account=account)
    sweep = load_sweep(path)
    with pytest.raises(ConfigError) as err:
        render(sweep, scheduler, tmp_path / "out", tmp_path / "runs")
    assert str(err.value) == (f"{path}: account: {account!r} is a placeholder, not a project: "
                              f"set account: in the spec (a copy of it) to the project your "
                              f"jobs are charged to, or pass --account PROJECT")
    assert not (tmp_path / "out").exists() and not (tmp_path / "runs").exists()
    with pytest.raises(ConfigError, match="is a placeholder"):  # and nothing claimed
        submit_module.submit(sweep, tmp_path / "runs")
    assert not (tmp_path / "runs").exists()


def test_the_cli_refuses_a_placeholder_account_unless_a_real_one_is_given(tmp_path):
    path = _spec(tmp_path, "lsf", account="ABC123")
    args = ["sweep", "render", str(path), "--out", str(tmp_path / "out"), "--runs",
            str(tmp_path / "runs")]
    proc = hpcue(*args, check=False)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert f"{path}: account: 'ABC123' is a placeholder" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "out").exists()
    submitted = hpcue("sweep", "submit", *args[2:3], "--runs", str(tmp_path / "runs"),
                      check=False)
    assert submitted.returncode == 2 and "'ABC123' is a placeholder" in submitted.stderr
    assert not (tmp_path / "runs").exists()
    for bad, message in (("ABC123", "--account: 'ABC123' is a placeholder, not a project"),
                         ("a;b", "--account: 'a;b' is not a plain name")):
        proc = hpcue(*args, "--account", bad, check=False)
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    hpcue(*args, "--account", "csc-42")
    (script,) = (tmp_path / "out").glob("digits-*.bsub")
    assert "#BSUB -P csc-42\n" in script.read_text()


@pytest.mark.parametrize("spec", sorted(p.name for p in SWEEPS.glob("*.yaml")))
def test_shipped_specs_carry_no_account_and_say_where_to_set_it(spec):
    """No shipped spec charges a made-up project: a machine that needs an account asks for
    yours (the spec's account: or --account)."""
    text = (SWEEPS / spec).read_text()
    assert "account" not in yaml.safe_load(text), spec
    if shipped_account(spec) is not None:
        assert "--account" in text, spec
        with pytest.raises(ConfigError, match=r"needs an account \(set account: in the spec, "
                                              r"or pass --account\)"):
            load_sweep(SWEEPS / spec)


def test_every_template_field_says_how_it_is_checked():
    for name in TEMPLATES.values():
        template = Template((jobs_dir() / name).read_text())
        fields = {m.group("named") or m.group("braced")
                  for m in template.pattern.finditer(template.template)} - {None}
        assert fields <= set(FIELDS), f"{name}: {sorted(fields - set(FIELDS))} unchecked"


@pytest.mark.parametrize("spec,scheduler,goldens", [
    ("digits-local.yaml", "slurm", {"digits-b16-s0": "digits-local-digits-b16-s0.sbatch",
                                    "clusters": "digits-local-clusters.sbatch"}),
    ("paper-summit.yaml", "lsf", {"medmnist-pathmnist-b48-s0-adamw-lrsqrt":
                                  "paper-summit-first.bsub"}),
    ("paper-frontier.yaml", "slurm", {"oxford-iiit-pet-b1024-s2-warmup-lrsqrt":
                                      "paper-frontier-last.sbatch"}),
])
def test_the_shipped_specs_pass_the_checks_and_render_the_golden_files(tmp_path, monkeypatch,
                                                                      spec, scheduler, goldens):
    sweep = load_sweep(SWEEPS / spec, account=shipped_account(spec))
    monkeypatch.chdir(tmp_path)  # render's default runs directory, relative as in the goldens
    render(sweep, scheduler, tmp_path / "out")
    for name, golden in goldens.items():
        if name == "clusters":
            (digest,) = cluster_jobs(sweep)
            name = f"clusters-{digest}"
        text = (tmp_path / "out" / script_name(name, scheduler)).read_text()
        assert text == (GOLDEN / golden).read_text()


# -- 2. empty and repeated axes -------------------------------------------------------------

@pytest.mark.parametrize("changes,message", [
    ({"seeds": []}, "seeds: an empty list: give at least one value"),
    ({"seeds": [0, 1, 0]}, "seeds: 0 given more than once"),
    ({"global_batch_sizes": []}, "global_batch_sizes: an empty list"),
    ({"global_batch_sizes": [16, 32, 16]}, "global_batch_sizes: 16 given more than once"),
    ({"configs": []}, "configs: an empty list"),
    ({"configs": ["configs/debug-digits.yaml"] * 2},
     "configs: configs/debug-digits.yaml given more than once"),
    ({"lr_scaling": []}, "lr_scaling: an empty list"),
    ({"num_clusters": [4, 4]}, "num_clusters: 4 given more than once"),
    ({"epsilon": [8, 8.0]}, "epsilon: 8.0 given more than once"),
])
def test_empty_or_repeated_axes_are_refused(tmp_path, changes, message):
    path = _spec(tmp_path, **changes)
    with pytest.raises(ConfigError) as err:
        load_sweep(path)
    assert f"{path}: {message}" in str(err.value)


def test_a_sweep_without_seeds_is_an_error_not_a_silent_success(tmp_path):
    proc = hpcue("sweep", "local", str(_spec(tmp_path, seeds=[])), "--runs",
                 str(tmp_path / "runs"), check=False)
    assert proc.returncode == 2 and "seeds: an empty list" in proc.stderr
    assert not (tmp_path / "runs").exists()


# -- 3. and 4. results that cannot be reported, points that stopped ---------------------------

def _result(root: Path, name: str, seed: int, **changes) -> Path:
    d = root / name
    d.mkdir(parents=True)
    (d / "config.yaml").write_text(yaml.safe_dump({"seed": seed, "data": {"image_size": 16}}))
    result = {"dataset": "digits", "global_batch_size": 32, "world_size": 2, "seed": seed,
              "clean_test_acc": 0.9, "unlearnable_test_acc": 0.5, "cluster_purity": 0.8,
              "seconds": {"cluster": 1.0}, "stage1_images_per_second": 100.0,
              "stage1_batch": {"lr_scaling": "none"}, "worst_case_unlearnable_test_acc": 0.5,
              "baselines": {"random": {"mean": 0.85}}, **changes}
    (d / "results.json").write_text(json.dumps(result))  # json writes NaN and Infinity as such
    return d / "results.json"


def _sweep_dir(root: Path, points: list[str], seeds: int) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "sweep.json").write_text(json.dumps({"points": points, "seeds": list(range(seeds))}))
    return root


@pytest.mark.parametrize("text,reason", [
    ("[1, 2]", "not a JSON object but list"),
    ('"done"', "not a JSON object but str"),
    ("{", "not valid JSON"),
    ('{"dataset": "digits"}', "no global_batch_size"),
])
def test_a_results_json_of_another_shape_is_a_failed_run_named_with_its_reason(tmp_path, text,
                                                                               reason):
    sw = _sweep_dir(tmp_path / "runs" / "sw", ["s0", "s1"], 2)
    _result(sw, "s0", 0)
    bad = _result(sw, "s1", 1)
    bad.write_text(text)
    paths = report(tmp_path / "runs")
    rows = list(csv.DictReader(paths["csv"].open()))
    assert [r["seeds"] for r in rows] == ["1"]
    md = paths["markdown"].read_text()
    assert "| 1 of 2 (!) |" in md and "Missing or failed points (1): sw/s1" in md
    assert f"- sw/s1: {bad}: {reason}" in md


@pytest.mark.parametrize("changes,key", [
    ({"clean_test_acc": float("nan")}, "clean_test_acc is nan"),
    ({"unlearnable_test_acc": float("inf")}, "unlearnable_test_acc is inf"),
    ({"baselines": {"random": {"mean": float("-inf")}}}, "baselines.random.mean is -inf"),
    ({"seconds": {"cluster": float("nan")}}, "seconds is {'cluster': nan}"),
    ({"worst_case_unlearnable_test_acc": None}, "worst_case_unlearnable_test_acc is None"),
    ({"global_batch_size": "32"}, "global_batch_size is '32', not a positive integer"),
    ({"baselines": [1]}, "baselines is [1], not an object"),
])
def test_nan_or_infinity_never_reaches_the_report(tmp_path, capsys, changes, key):
    runs = tmp_path / "runs"
    _result(runs, "good", 0)
    bad = _result(runs, "bad", 1, **changes)
    paths = report(runs)
    table = [line for line in paths["markdown"].read_text().splitlines() if line.startswith("|")]
    for text in (paths["csv"].read_text(), "\n".join(table)):
        assert not re.search(r"\bnan\b|\binf", text, re.IGNORECASE), text
    (row,) = csv.DictReader(paths["csv"].open())
    assert row["seeds"] == "1" and float(row["clean_test_acc_mean"]) == 0.9
    assert f"- bad: {bad}: {key}" in paths["markdown"].read_text()
    assert f"[hpcue]   bad: {bad}: {key}" in capsys.readouterr().out


def test_a_damaged_config_yaml_is_a_failed_run(tmp_path):
    runs = tmp_path / "runs"
    _result(runs, "good", 0)
    _result(runs, "bad", 1)
    (runs / "bad" / "config.yaml").write_text("seed: [1\n")
    md = report(runs)["markdown"].read_text()
    assert f"- bad: {runs / 'bad' / 'config.yaml'}: not valid YAML" in md


def test_a_report_of_only_unusable_results_is_one_line_naming_each_file(tmp_path):
    runs = tmp_path / "runs"
    (runs / "a").mkdir(parents=True)
    (runs / "a" / "results.json").write_text("[]")
    _result(runs, "b", 0, clean_test_acc=float("nan"))
    proc = hpcue("report", str(runs), check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert "none of its results.json can be reported" in proc.stderr
    assert f"a: {runs / 'a' / 'results.json'}: not a JSON object but list" in proc.stderr
    assert f"b: {runs / 'b' / 'results.json'}: clean_test_acc is nan" in proc.stderr
    with pytest.raises(InputError):
        report(runs)


@pytest.mark.parametrize("manifest", ['[]', '{"points": "s0"}', '{"points": [1]}', "{"])
def test_a_damaged_sweep_json_is_one_error_naming_it(tmp_path, manifest):
    sw = tmp_path / "runs" / "sw"
    _result(sw, "s0", 0)
    (sw / "sweep.json").write_text(manifest)
    with pytest.raises(InputError, match=re.escape(str(sw / "sweep.json"))):
        report(tmp_path / "runs")


def test_a_stopped_point_is_listed_as_failed_with_the_stages_it_finished(tmp_path, capsys):
    sw = _sweep_dir(tmp_path / "runs" / "sw", ["s0", "s1", "s2"], 3)
    _result(sw, "s0", 0)
    stopped = sw / "s1" / "stages"  # stopped in stage generate: no results.json
    stopped.mkdir(parents=True)
    for stage in ("cluster", "train"):
        (stopped / f"{stage}.json").write_text("{}")
    (sw / "s1" / "config.yaml").write_text("seed: 1\n")
    md = report(tmp_path / "runs")["markdown"].read_text()
    assert "| 1 of 3 (!) |" in md and "Missing or failed points (2): sw/s1, sw/s2" in md
    assert "- sw/s1: stopped or failed after stage train: no results.json" in md
    assert "- sw/s2: not run, or stopped in its first stage: no results.json" in md
    out = capsys.readouterr().out
    assert "[hpcue] 2 missing or failed points, in no row of the report:" in out


# -- 5. `sweep local` counts a point whose run failed --------------------------------------

def _commands(monkeypatch, by_point: dict[str, list[str]]) -> None:
    monkeypatch.setattr(submit_module, "local_command",
                        lambda sweep, point, runs, mpiexec: by_point[point.name])


def test_sweep_local_counts_a_killed_a_failed_and_a_silent_run_as_failed(tmp_path, monkeypatch,
                                                                         capsys):
    sweep = load_sweep(_spec(tmp_path, global_batch_sizes=[16, 32, 64, 128]))
    runs = tmp_path / "runs"
    finishes = runs / "digits-local" / "digits-b128-s0" / "results.json"
    _commands(monkeypatch, {
        "digits-b16-s0": [sys.executable, "-c", "import os, signal; "
                                                "os.kill(os.getpid(), signal.SIGTERM)"],
        "digits-b32-s0": [sys.executable, "-c", "raise SystemExit(3)"],
        "digits-b64-s0": [sys.executable, "-c", "pass"],  # exit 0, no results.json
        "digits-b128-s0": [sys.executable, "-c", f"import pathlib; p = pathlib.Path("
                                                 f"{str(finishes)!r}); p.parent.mkdir("
                                                 f"parents=True); p.write_text('{{}}')"],
    })
    assert run_local(sweep, runs) == ["digits-b16-s0", "digits-b32-s0", "digits-b64-s0"]
    out = capsys.readouterr().out
    assert "digits-b16-s0: failed (killed by SIGTERM)" in out
    assert "digits-b32-s0: failed (exit status 3)" in out
    assert "digits-b64-s0: failed (exit status 0 but no results.json)" in out
    assert "digits-b128-s0: failed" not in out


def test_sweep_local_exits_non_zero_when_a_real_run_fails(tmp_path):
    spec = _spec(tmp_path, global_batch_sizes=[16],
                 overrides=["data.shards=/nonexistent/shards", "runtime.accelerator=cpu"])
    proc = hpcue("sweep", "local", str(spec), "--runs", str(tmp_path / "runs"), check=False)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "digits-b16-s0: failed (exit status 2)" in proc.stdout
    assert "points failed: digits-b16-s0" in proc.stderr


@pytest.mark.parametrize("returncode,finished,why", [
    (0, True, None), (0, False, "exit status 0 but no results.json"), (1, True, "exit status 1"),
    (-9, False, "killed by SIGKILL"), (143, False, "exit status 143 (stopped by SIGTERM?)"),
])
def test_why_a_local_run_failed(tmp_path, returncode, finished, why):
    if finished:
        (tmp_path / "results.json").write_text("{}")
    assert submit_module.run_failure(returncode, tmp_path) == why
