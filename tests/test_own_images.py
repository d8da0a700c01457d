"""One's own images on a CPU with nothing downloaded, as the README walks through it: the
shipped self-contained config, copied anywhere, on a flat folder of class folders."""

import json
import shutil

import pytest

from hpcue.config import ConfigError, load_config
from tests import fabricate
from tests.conftest import REPO, hpcue, tiny_sets


def test_a_copied_config_says_where_its_base_is(tmp_path):
    copy = tmp_path / "mine.yaml"
    shutil.copy(REPO / "configs" / "example-imagefolder.yaml", copy)
    with pytest.raises(ConfigError) as err:
        load_config(copy)
    text = str(err.value)
    assert f"{copy}: base: base/paper.yaml not found beside it" in text
    assert "the shipped one is " in text and "paper.yaml: copy it beside mine.yaml" in text
    assert "configs/cpu-imagefolder.yaml" in text


def test_own_images_on_a_cpu_with_the_shipped_config_copied_elsewhere(tmp_path):
    raw = fabricate.image_folder(tmp_path / "images", classes=("circle", "square", "star"),
                                 per_class=12)
    config = tmp_path / "elsewhere" / "cpu-imagefolder.yaml"
    config.parent.mkdir()
    shutil.copy(REPO / "configs" / "cpu-imagefolder.yaml", config)
    shards, out = tmp_path / "shards", tmp_path / "run"
    hpcue("data", "prepare", "imagefolder", "--root", str(raw), "--image-size", "16",
          "--out", str(shards))
    proc = hpcue("run", "--config", str(config), "--out", str(out), *tiny_sets(
        [f"data.shards={shards}", "train.global_batch_size=8",
         "victim.global_batch_size=8", "victim.baselines=[random]"]), cwd=tmp_path)
    results = json.loads((out / "results.json").read_text())
    assert results["dataset"] == "imagefolder" and results["num_clusters"] == 10
    assert results["surrogate_pretraining"] == "self_supervised"
    assert results["surrogate_saw_protected_labels"] is False
    assert set(results["victims"]) == {"clean", "uc", "random"}
    assert results["verdict"]["level"] in ("protected", "weak", "uncertain", "not protected",
                                           "undecided")
    assert "Verdict: " in proc.stdout
    # 9 held-out images: every interval is rough, and results.json and the run's last line say so
    (warning,) = results["warnings"]
    assert "the test set has 9 images" in warning and "normal approximation" in warning
    assert proc.stderr.strip().splitlines()[-1] == f"[hpcue] WARNING: {warning}"
