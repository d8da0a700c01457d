"""Config validation: every impossible setting is one error naming the key and the problem."""


import pytest
import yaml

from hpcue.config import ConfigError, check_consistency, load_config
from tests.conftest import REPO, hpcue


def _write(tmp_path, data, name="c.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("override,message", [
    ("train.global_batch_size=0", "train.global_batch_size: Input should be greater than 0"),
    ("train.global_batch_size=-8", "train.global_batch_size: Input should be greater than 0"),
    ("victim.global_batch_size=0", "victim.global_batch_size: Input should be greater than 0"),
    ("train.epsilon=0", "train.epsilon: epsilon must be in (0, 1]"),
    ("train.epsilon=1.5", "train.epsilon: epsilon must be in (0, 1]"),
    ("data.image_size=30", "data.image_size: image_size must be a multiple of 4"),
    ("train.bogus=1", "train.bogus: unknown key"),
    ("colour=red", "colour: unknown key"),
    ("data.dataset=imagenet21k", "unknown data set 'imagenet21k'"),
    ("data.dataset=medmnist:nosuchmnist", "unknown MedMNIST flag 'nosuchmnist'"),
    ("surrogate.arch=vit_h", "surrogate.arch: Input should be 'small_cnn', 'resnet18', 'resnet50'"),
    ("victim.arch=resnet50", "victim.arch: Input should be 'small_cnn', 'resnet18', "
                              "'resnet18_small', 'vgg11_bn', 'vgg16_bn' or 'vit_tiny'"),
    ("runtime.max_micro_batch=0", "runtime.max_micro_batch: must be at least 1, 'auto' or null"),
    ("train.perturbation_channels=2",
     "train.perturbation_channels: Input should be 'auto', 1 or 3"),
    ("data.augment=flip", "data.augment: Input should be 'auto', 'none', 'crop' or 'crop_flip'"),
    ("surrogate.pretext=jigsaw", "surrogate.pretext: Input should be 'rotation' or 'simclr'"),
])
def test_bad_values_are_named(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert message in str(err.value)


def test_k_larger_than_data_set():
    cfg = load_config(None, ["cluster.num_clusters=50"])
    with pytest.raises(ConfigError, match="num_clusters=50 is larger than the training set"):
        check_consistency(cfg, 20)


@pytest.mark.parametrize("section", ["train", "victim"])
def test_global_batch_larger_than_the_training_set(section):
    cfg = load_config(None, [f"{section}.global_batch_size=96"])
    check_consistency(cfg, 96, world_size=2)
    with pytest.raises(ConfigError, match=f"{section}.global_batch_size=96 is larger than the "
                                          r"training set of digits \(95 images\) on 2 rank"):
        check_consistency(cfg, 95, world_size=2)


@pytest.mark.parametrize("section", ["train", "victim"])
def test_a_scaled_lr_needs_its_base_batch(section):
    with pytest.raises(ConfigError, match=f"{section}.lr_scaling=sqrt needs "
                                          f"{section}.base_batch_size"):
        load_config(None, [f"{section}.lr_scaling=sqrt"])
    cfg = load_config(None, [f"{section}.lr_scaling=sqrt", f"{section}.base_batch_size=16"])
    assert getattr(cfg, section).base_batch_size == 16


def test_file_overrides_and_base_chain(tmp_path):
    _write(tmp_path, {"train": {"epochs": 7, "lr": 0.5}, "seed": 3}, "base.yaml")
    path = _write(tmp_path, {"base": "base.yaml", "train": {"epochs": 9}})
    cfg = load_config(path, ["seed=11", "data.root=null"])
    assert (cfg.train.epochs, cfg.train.lr, cfg.seed, cfg.data.root) == (9, 0.5, 11, None)


def test_error_names_the_file(tmp_path):
    path = _write(tmp_path, {"train": {"epsilon": 2}})
    with pytest.raises(ConfigError, match=f"{path}: train.epsilon"):
        load_config(path)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "none.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="expected key=value"):
        load_config(None, ["train.epochs"])


def test_every_shipped_config_validates():
    paths = sorted((REPO / "configs").glob("*.yaml")) + sorted(
        (REPO / "configs" / "base").glob("*.yaml"))
    assert paths
    for path in paths:
        load_config(path)


def test_cli_bad_config_exits_nonzero_and_writes_nothing(tmp_path):
    out = tmp_path / "run"
    proc = hpcue("run", "--out", str(out), "--set", "train.global_batch_size=0", check=False)
    assert proc.returncode == 2
    assert "train.global_batch_size: Input should be greater than 0" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists()


def test_cli_stage_before_its_input_exists(tmp_path):
    out = tmp_path / "run"
    proc = hpcue("train", "--out", str(out), check=False)
    assert proc.returncode == 2
    assert f"run directory {out} does not exist" in proc.stderr
    assert not out.exists()


def test_split_smaller_than_world_size():
    cfg = load_config(None, ["cluster.num_clusters=2", "train.global_batch_size=6",
                             "victim.global_batch_size=6"])
    check_consistency(cfg, 20, 3, world_size=3)
    with pytest.raises(ConfigError, match="test split of digits has 2 images, fewer than the 3"):
        check_consistency(cfg, 20, 2, world_size=3)


def test_the_shipped_debug_config_is_exactly_the_default_run():
    """`hpcue run` with no --config and with configs/debug-digits.yaml run the same thing, to
    the last bit of every value (a rounded eps trains other generators: chaos does the rest)."""
    assert load_config(REPO / "configs" / "debug-digits.yaml") == load_config(None)
