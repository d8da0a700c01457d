"""What a new user meets first: --version, help that says what hpcue is and shows every
default, ``config show``, "did you mean", errors that name their source, launcher errors in
words, and a rerun into another config's directory that names the keys that differ.

All in-process and fast: no training.
"""

from __future__ import annotations

import argparse
import json
import os

import pytest
import yaml

import hpcue
from hpcue.cli import build_parser, main
from hpcue.config import ConfigError, load_config, save_config
from hpcue.distributed.launchers import TopologyError, read_launcher
from hpcue.stages.guard import check_same_config, refuse_replacing
from hpcue.stages.rundir import RunDir, StageInputError


def _help(capsys, *argv: str) -> str:
    with pytest.raises(SystemExit) as done:
        main([*argv, "--help"])
    assert done.value.code == 0
    return capsys.readouterr().out


def test_version(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"hpcue {hpcue.__version__}"


def test_short_version_is_the_version(capsys):
    with pytest.raises(SystemExit) as done:
        main(["-V"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"hpcue {hpcue.__version__}"


def _arguments(parser: argparse.ArgumentParser, command: tuple[str, ...] = ()):
    """(command, argument) for every argument of every command, subcommands included."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _arguments(sub, (*command, name))
        elif not isinstance(action, argparse._HelpAction):
            yield command, action


def test_every_argument_of_every_command_says_what_it_is(capsys):
    missing = [(" ".join(command), action.dest) for command, action in _arguments(build_parser())
               if not action.help]
    assert missing == []
    for command in ("verify", "info"):
        assert "a shard directory: the --out of `hpcue data prepare`" in _help(
            capsys, "data", command)


def test_top_help_says_what_hpcue_is_with_examples(capsys):
    text = _help(capsys)
    assert "unlearnable with Unlearnable Clusters" in text
    assert "examples:" in text and "hpcue export runs/digits-debug" in text
    assert "The command line only" not in text  # the module's docstring is for developers
    for command in ("run", "cluster", "export", "report", "sweep", "doctor", "config"):
        assert f"    {command}" in text


def test_every_help_shows_the_defaults(capsys):
    assert "(default: 224)" in _help(capsys, "data", "prepare")
    assert "(default: runs)" in _help(capsys, "sweep", "local")
    assert "(default: imagefolder)" in _help(capsys, "export")
    run = _help(capsys, "run")
    assert "(default: runs/<name>)" in run and "-q, --quiet" in run and "-v, --verbose" in run
    stage = _help(capsys, "generate")
    assert "--force" in stage and "the run directory to work on" in stage
    # no option shows "(default: None)" or a default twice
    for argv in (["run"], ["export"], ["report"], ["sweep", "render"], ["doctor"]):
        text = _help(capsys, *argv)
        assert "default: None" not in text and "(default: default" not in text


def test_a_stage_command_needs_its_run_directory(capsys):
    with pytest.raises(SystemExit) as done:
        build_parser().parse_args(["generate"])
    assert done.value.code == 2
    assert "the following arguments are required: --out" in capsys.readouterr().err


def test_config_show_prints_the_resolved_config(capsys):
    assert main(["config", "show", "--set", "train.epochs=3"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["train"]["epochs"] == 3
    assert shown == load_config(None, ["train.epochs=3"]).model_dump(mode="json")


def test_config_show_of_a_bad_key_is_one_line(capsys):
    assert main(["config", "show", "--set", "train.epoch=3"]) == 2
    err = capsys.readouterr().err
    assert "--set train.epoch: unknown key; did you mean 'train.epochs'?" in err


def test_unknown_keys_get_a_suggestion_and_their_source(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("victim:\n  epocs: 3\n")
    with pytest.raises(ConfigError) as found:
        load_config(path, ["train.global_batch=8", "data.image_size=3"])
    text = str(found.value)
    assert f"{path}: victim.epocs: unknown key; did you mean 'victim.epochs'?" in text
    assert ("--set train.global_batch: unknown key; did you mean 'train.global_batch_size'?"
            in text)
    assert "--set data.image_size: Input should be greater than or equal to 8" in text
    with pytest.raises(ConfigError, match=r"--set colour: unknown key$"):
        load_config(None, ["colour=red"])  # nothing close: no suggestion


@pytest.mark.parametrize("name, close", [("digit", "digits"), ("flowers", "flowers102"),
                                         ("medmnist:pathmnst", "pathmnist")])
def test_unknown_data_sets_get_a_suggestion(name, close):
    with pytest.raises(ConfigError, match=f"did you mean '{close}'"):
        load_config(None, [f"data.dataset={name}"])


@pytest.mark.parametrize("launcher, command", [("slurm", "srun"), ("lsf", "jsrun"),
                                               ("torchrun", "torchrun")])
def test_a_named_launcher_outside_its_launch_is_said_in_words(monkeypatch, launcher, command):
    for key in list(os.environ):
        if key.startswith(("SLURM_", "LSB_", "JSM_", "OMPI_", "PMI_", "MPI_")) or key in (
                "RANK", "WORLD_SIZE", "LOCAL_RANK", "TORCHELASTIC_RUN_ID", "GROUP_RANK"):
            monkeypatch.delenv(key)
    with pytest.raises(TopologyError) as found:
        read_launcher(launcher)
    assert str(found.value) == (
        f"`--launcher {launcher}` (runtime.launcher: {launcher}) but this process was not "
        f"started by {command}: run it under {command}, or let hpcue detect the launcher (auto)")


def _finished_dir(tmp_path, overrides: list[str]) -> RunDir:
    """A run directory as a finished run leaves it (config, records, results), no training."""
    run = RunDir(tmp_path / "run")
    run.root.mkdir()
    save_config(load_config(None, overrides), run.config)
    for stage in ("cluster", "train", "generate", "evaluate"):
        run.write_record(stage, {"seconds": 1.0})
    (run.root / "unlearnable").mkdir()
    run.results.write_text(json.dumps({"dataset": "digits"}))
    return run


def test_a_rerun_with_another_config_names_the_keys_that_differ(tmp_path):
    run = _finished_dir(tmp_path, ["train.epochs=5"])
    with pytest.raises(ConfigError) as found:
        check_same_config(load_config(None, ["train.epochs=6", "victim.seeds=2"]), run)
    text = str(found.value)
    assert "holds a run with another config" in text
    assert "train.epochs: 5 there, 6 now" in text and "victim.seeds: 6 there, 2 now" in text
    check_same_config(load_config(None, ["train.epochs=5"]), run)  # the same config resumes


def test_the_refusal_names_what_a_stage_would_replace(tmp_path):
    run = _finished_dir(tmp_path, [])
    with pytest.raises(StageInputError) as found:
        refuse_replacing(run, "generate")
    text = str(found.value)
    assert "would replace the finished results of generate, evaluate" in text
    assert "results.json, unlearnable, stages/generate.json" in text and "--force" in text
    run.stage_record("evaluate").unlink()
    run.stage_record("generate").unlink()
    refuse_replacing(run, "generate")  # nothing finished from generate on: nothing to refuse
