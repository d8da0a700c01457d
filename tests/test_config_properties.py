"""Property tests of the config reader: whatever a YAML file or ``--set`` holds, the result is a
valid RunConfig or one ConfigError, never another exception; no NaN or infinity is ever
accepted; a run name never leads out of ``runs/``."""

from __future__ import annotations

import math
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hpcue.config import ConfigError, RunConfig, load_config

KEYS = ["name", "seed", "data.dataset", "data.image_size", "data.test_fraction",
        "data.split_seed", "data.augment", "surrogate.arch", "surrogate.pretrain_lr",
        "cluster.num_clusters", "cluster.tol", "train.epsilon", "train.lr",
        "train.global_batch_size", "train.lr_scaling", "train.warmup_epochs",
        "train.perturbation_channels", "victim.lr", "victim.momentum", "victim.baselines",
        "runtime.timeout_s", "runtime.max_micro_batch", "runtime.precision", "no.such.key"]
FLOAT_KEYS = ["data.test_fraction", "train.epsilon", "train.lr", "train.min_lr",
              "train.warmup_epochs", "victim.lr", "victim.momentum", "runtime.timeout_s",
              "runtime.setup_timeout_s", "cluster.tol", "surrogate.pretrain_lr"]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                max_size=3),
    max_leaves=8)
FAST = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


def _load(overrides: list[str]) -> RunConfig | None:
    try:
        return load_config(None, overrides)
    except ConfigError:
        return None


@FAST
@given(st.lists(st.tuples(st.sampled_from(KEYS), json_values), max_size=4))
def test_any_override_is_a_config_or_one_config_error(pairs):
    overrides = [f"{key}={yaml.safe_dump(value, default_flow_style=True).strip()}"
                 for key, value in pairs]
    cfg = _load(overrides)
    if cfg is not None:  # what was accepted holds together
        assert 8 <= cfg.data.image_size <= 1024 and cfg.data.image_size % 4 == 0
        assert 0 < cfg.train.epsilon <= 1


@FAST
@given(st.sampled_from(FLOAT_KEYS), st.floats(allow_nan=True, allow_infinity=True))
def test_no_setting_accepts_nan_or_infinity(key, value):
    cfg = _load([f"{key}={value!r}".replace("nan", ".nan").replace("inf", ".inf")])
    if not math.isfinite(value):
        assert cfg is None
    elif cfg is not None:
        section, field = key.split(".")
        assert getattr(getattr(cfg, section), field) == value


@FAST
@given(st.text(min_size=1, max_size=20))
def test_an_accepted_run_name_stays_inside_runs(name):
    try:
        cfg = RunConfig(name=name)
    except ValueError:  # pydantic's ValidationError; load_config makes it a ConfigError
        return
    runs = Path("/runs")
    assert (runs / cfg.name).resolve().parent == runs
    assert not cfg.name.startswith((".", "-")) and "/" not in cfg.name


@FAST
@given(json_values)
def test_any_yaml_document_is_a_config_or_one_config_error(tmp_path_factory, document):
    path = tmp_path_factory.mktemp("cfg") / "config.yaml"
    path.write_text(yaml.safe_dump(document))
    try:
        load_config(path)
    except ConfigError as exc:
        assert str(path) in str(exc) or "invalid config" in str(exc)
