"""``hpcue run`` at tiny sizes, and the same run stage by stage from its saved config."""

import csv
import json
import shutil

import numpy as np
import pytest
import torch
import yaml

from hpcue.data.shard_set import open_shards
from hpcue.data.verify import verify
from hpcue.models.shipped import SHIPPED
from tests.conftest import DEFENDED, FULL_PROTOCOL, hpcue, tiny_sets

FIELDS = ("dataset", "num_clusters", "epsilon", "global_batch_size", "cluster_purity",
          "cluster_nmi", "clean_test_acc", "unlearnable_test_acc", "seconds",
          "stage1_images_per_second")


#: an evaluation of the clean and UC sets alone (the full protocol's baselines and defenses,
#: PGD among them, are what take its time)
ARMS_ONLY = ["--set", "victim.baselines=[]", "--set", "victim.defenses=[]"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("e2e") / "run"
    proc = hpcue("run", "--out", str(out), *tiny_sets(FULL_PROTOCOL))
    return out, proc


def test_results_json_fields(tiny_run):
    out, proc = tiny_run
    results = json.loads((out / "results.json").read_text())
    for field in FIELDS:
        assert field in results, field
    assert results["dataset"] == "digits"
    assert results["num_clusters"] == 10
    assert results["epsilon"] == pytest.approx(16 / 255)
    assert results["global_batch_size"] == 64
    assert 0.1 <= results["cluster_purity"] <= 1 and 0 <= results["cluster_nmi"] <= 1
    assert 0 <= results["unlearnable_test_acc"] <= 1
    # two epochs of a small CNN on digits already learn far above chance (0.1)
    assert results["clean_test_acc"] > 0.3
    assert results["stage1_images_per_second"] > 0
    assert set(results["seconds"]) == {"cluster", "train", "generate", "evaluate"}
    assert results["max_abs_pixel_change_255"] <= 16
    # the shipped surrogate: trained on MNIST-5k with MNIST's labels, never the protected ones
    assert results["surrogate_pretraining"] == "mnist5k"
    training = results["surrogate_training"]
    assert results["surrogate_saw_protected_labels"] is False
    assert training["saw_protected_labels"] is False and "MNIST-5k" in training["trained_on"]
    assert training["weights_sha256"] == SHIPPED["mnist5k"].sha256
    assert (out / "surrogate.pt").read_bytes() == SHIPPED["mnist5k"].path.read_bytes()
    # the perturbation's cost to the images is reported
    # what auto resolved to for digits: crops without flips, one-channel perturbations
    assert results["augment"] == "crop" and results["perturbation_channels"] == 1
    assert 20 < results["psnr_db"] < 60 and 0 < results["ssim"] < 1
    # what an epoch really ran: 1347 images in batches of 64, the last step 3 images, no repeats
    for key in ("stage1_batch", "victim_batch"):
        shape = results[key]
        assert shape["num_train"] == 1347 and shape["optimizer_steps_per_epoch"] == 22
        assert shape["padded_repeats_per_epoch"] == 0 and shape["images_last_step"] == 3
    assert "test acc: uc" in proc.stdout and " ± " in proc.stdout  # the closing table


def test_results_hold_every_victim_over_seeds_with_baselines_and_defenses(tiny_run):
    out, proc = tiny_run
    results = json.loads((out / "results.json").read_text())
    victims = results["victims"]
    assert set(victims) == {"clean", "uc", *DEFENDED, "random", "classwise"}
    assert len(set(results["victim_seeds"])) == 2
    for summary in victims.values():
        assert summary["n"] == 2 and len(summary["per_seed"]) == 2
        assert summary["n_test_images"] == 450 and summary["test_se"] >= 0
        assert summary["mean"] == pytest.approx(np.mean(summary["per_seed"]), abs=1e-4)
        low, high = summary["ci95"]
        assert 0 <= low <= summary["mean"] <= high <= 1
    # digits are gray and so is their unlearnable set: grayscale changes nothing, no victims
    assert victims["uc+grayscale"] == victims["uc"] | {"same_as": "uc"}
    assert "uc+grayscale" in results["defenses_not_trained"]
    assert set(results["defenses"]) == {d.removeprefix("uc+") for d in DEFENDED}
    assert results["defenses"]["jpeg10"]["params"] == {"quality": 10}
    assert results["clean_test_acc"] == victims["clean"]["mean"]
    assert results["unlearnable_test_acc"] == victims["uc"]["mean"]
    assert results["baselines"]["random"] == victims["random"]
    worst = max(("uc", *DEFENDED), key=lambda a: victims[a]["mean"])
    assert results["worst_case_unlearnable_test_acc"] == victims[worst]["mean"]
    assert results["worst_case_defense"] == worst
    below = results["worst_case_below_clean"]
    assert below["per_seed"] == pytest.approx(
        [c - w for c, w in zip(victims["clean"]["per_seed"], victims[worst]["per_seed"],
                               strict=True)], abs=1e-3)
    assert results["verdict"]["level"] in ("protected", "weak", "uncertain", "not protected")
    assert results["verdict"]["text"][0].startswith("Verdict: ")
    assert "Verdict: " in proc.stdout
    advantage = results["uc_advantage_over_random"]
    paired = [r - u for r, u in zip(victims["random"]["per_seed"], victims["uc"]["per_seed"],
                                    strict=True)]
    assert advantage["per_seed"] == pytest.approx(paired, abs=1e-3)
    for arm, runs in results["victim_curves"].items():  # clean test accuracy after every epoch
        assert len(runs) == 2 and all(len(epochs) == 2 for epochs in runs), arm
        assert [r[-1] for r in runs] == pytest.approx(victims[arm]["per_seed"], abs=1e-4)
    assert (out / "victim_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_run_directory_contents(tiny_run):
    out, _ = tiny_run
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["data"]["image_size"] == 16 and cfg["train"]["epochs"] == 2
    clusters = torch.load(out / "clusters.pt", weights_only=True)
    assert clusters["centers"].shape[0] == 10
    assert clusters["assignments"].shape == (1347,)
    deltas = torch.load(out / "perturbations.pt", weights_only=True)["deltas"]
    # digits are gray: one channel, the same change in R, G and B, so the set stays gray
    assert deltas.shape == (10, 1, 16, 16) and float(deltas.abs().max()) <= 16 / 255 + 1e-6
    unlearnable = open_shards(out / "unlearnable").read_split("train")
    assert unlearnable.images.dtype == np.uint8 and unlearnable.images.shape == (1347, 16, 16, 3)
    images = unlearnable.images
    assert (images[..., 0] == images[..., 1]).all() and (images[..., 1] == images[..., 2]).all()
    assert open_shards(out / "data").grayscale
    assert verify(out / "unlearnable") == {"train": 1347}
    assert verify(out / "data") == {"train": 1347, "test": 450}
    assert (out / "preview.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for stage in ("train", "victims"):
        rows = list(csv.DictReader((out / "logs" / stage / "metrics.csv").open()))
        assert rows, stage


def test_labels_untouched_and_images_within_budget(tiny_run):
    out, _ = tiny_run
    from hpcue.data.importers.digits import load_digits_splits

    clean = load_digits_splits(16, 0.25, 0)["train"]
    unlearnable = open_shards(out / "unlearnable").read_split("train")
    assert np.array_equal(unlearnable.labels, clean.labels)
    diff = np.abs(unlearnable.images.astype(int) - clean.images.astype(int))
    assert diff.max() <= 16 and diff.mean() > 0


def test_stage_commands_reproduce_the_run(tiny_run, tmp_path):
    out, _ = tiny_run
    again = tmp_path / "again"
    for stage in ("cluster", "train", "generate"):
        config = ["--config", str(out / "config.yaml")] if stage == "cluster" else []
        hpcue(stage, "--out", str(again), *config)
    # the clean and UC victims only: each victim trains from its own seed whatever else the
    # ensemble holds (tests/test_victim_spread.py), so they are the full protocol's own
    hpcue("evaluate", "--out", str(again), *ARMS_ONLY)
    a = torch.load(out / "clusters.pt", weights_only=True)
    b = torch.load(again / "clusters.pt", weights_only=True)
    assert torch.equal(a["assignments"], b["assignments"])
    da = torch.load(out / "perturbations.pt", weights_only=True)["deltas"]
    db = torch.load(again / "perturbations.pt", weights_only=True)["deltas"]
    torch.testing.assert_close(da, db)
    ra = json.loads((out / "results.json").read_text())
    rb = json.loads((again / "results.json").read_text())
    for key in ("cluster_purity", "clean_test_acc", "unlearnable_test_acc"):
        assert ra[key] == rb[key], key


def test_stages_never_build_on_other_settings_and_results_describe_the_artifacts(tiny_run,
                                                                                 tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(tiny_run[0], out)
    before = {p: p.read_bytes() for p in (out / "results.json", out / "config.yaml")}
    # perturbations made at 16/255 with K = 10 must not be reported as eps 0.0078 and K 4
    proc = hpcue("generate", "--out", str(out), "--set", "train.epsilon=0.0078",
                 "--set", "cluster.num_clusters=4", check=False)
    assert proc.returncode == 2
    assert "stage cluster was made with other settings" in proc.stderr
    assert "cluster.num_clusters (10 -> 4)" in proc.stderr
    assert f"rerun `hpcue cluster --out {out}`" in proc.stderr
    assert {p: p.read_bytes() for p in before} == before  # nothing cleared, config kept
    proc = hpcue("evaluate", "--out", str(out), "--set", "train.epsilon=0.0078", check=False)
    assert proc.returncode == 2 and "train.epsilon (0.06274509803921569 -> 0.0078)" in proc.stderr
    # rerunning the stage whose settings change is the way: later stages then follow it
    hpcue("train", "--out", str(out), "--force", "--set", "train.epsilon=0.0314",
          "--set", "train.epochs=1")
    hpcue("generate", "--out", str(out))
    hpcue("evaluate", "--out", str(out), "--set", "victim.seeds=1", *ARMS_ONLY)
    results = json.loads((out / "results.json").read_text())
    assert results["epsilon"] == 0.0314 and results["num_clusters"] == 10
    records = {s: json.loads((out / "stages" / f"{s}.json").read_text())
               for s in ("cluster", "train", "generate", "evaluate")}
    assert records["train"]["config"]["train.epsilon"] == 0.0314
    assert records["cluster"]["config"]["cluster.num_clusters"] == 10
    assert set(records["generate"]["inputs"]) == {"data", "clusters", "perturbations"}
    assert records["evaluate"]["inputs"]["clusters"] == records["train"]["inputs"]["clusters"]
    assert records["evaluate"]["config"]["victim.seeds"] == 1


def test_shared_clusters_are_refused_for_shards_prepared_again_at_their_path(tmp_path):
    shards, shared = tmp_path / "shards", tmp_path / "shared"
    sets = tiny_sets([f"data.shards={shards}", "data.image_size=8", f"cluster.shared={shared}"])
    hpcue("data", "prepare", "digits", "--out", str(shards), "--image-size", "8")
    hpcue("cluster", "--out", str(tmp_path / "first"), *sets)
    (published,) = shared.iterdir()
    shutil.rmtree(shards)  # the same path, other images: another train/test split
    hpcue("data", "prepare", "digits", "--out", str(shards), "--image-size", "8", "--seed", "1")
    proc = hpcue("cluster", "--out", str(tmp_path / "second"), *sets, check=False)
    assert proc.returncode == 2
    assert f"{published} holds clusters of other data than {shards}" in proc.stderr
    assert not (tmp_path / "second").exists()


def test_cluster_stage_with_a_contrastive_surrogate(tmp_path):
    out = tmp_path / "run"
    hpcue("cluster", "--out", str(out), *tiny_sets(["surrogate.pretraining=self_supervised",
                                                    "surrogate.pretext=simclr"]))
    record = json.loads((out / "stages" / "cluster.json").read_text())
    assert record["surrogate_pretraining"] == "self_supervised"
    assert record["surrogate_pretext"] == "simclr" and record["config"]["surrogate.pretext"]
    origin = record["surrogate_origin"]
    assert origin["saw_protected_labels"] is False and "without labels" in origin["trained_on"]
    head = torch.load(out / "surrogate.pt", weights_only=True)["fc.weight"]
    assert head.shape[0] == 64  # the projection, not one output per class
    assert 0 < record["cluster_purity"] <= 1


def test_run_on_prepared_medmnist_shards(tmp_path):
    from tests import fabricate

    fabricate.medmnist_npz(tmp_path / "raw", "bloodmnist", 28, n=24)
    shards = tmp_path / "shards"
    hpcue("data", "prepare", "medmnist:bloodmnist", "--root", str(tmp_path / "raw"),
          "--out", str(shards), "--image-size", "28", "--shards", "3")
    out = tmp_path / "run"
    proc = hpcue("run", "--out", str(out), *tiny_sets(["data.image_size=28",
                                                "data.dataset=medmnist:bloodmnist",
                                                f"data.shards={shards}", "cluster.num_clusters=3",
                                                "train.global_batch_size=8",
                                                "victim.global_batch_size=8"]))
    results = json.loads((out / "results.json").read_text())
    assert results["dataset"] == "medmnist:bloodmnist" and results["num_clusters"] == 3
    assert results["perturbation_channels"] == 3 and results["augment"] == "crop_flip"  # colour
    assert not (out / "data").exists()  # read in place, not copied
    assert verify(out / "unlearnable") == {"train": 24}
    assert len(open_shards(out / "unlearnable").paths("train")) == 3
    # the default surrogate learned digits: said once, for images that are not digits
    assert proc.stdout.count("the surrogate is the small CNN trained on MNIST digits") == 1


def test_the_reference_scheme_trains_every_generator_from_every_image(tmp_path):
    """train.generator_images=all reaches stage 1 and is recorded; its perturbations differ
    from the own-cluster scheme's on the same clusters."""
    own, every = tmp_path / "own", tmp_path / "all"
    one = ["train.epochs=1"]
    hpcue("cluster", "--out", str(own), *tiny_sets(one))
    shutil.copytree(own, every)
    hpcue("train", "--out", str(own), *tiny_sets(one))
    hpcue("train", "--out", str(every), *tiny_sets([*one, "train.generator_images=all"]))
    records = {p: json.loads((p / "stages" / "train.json").read_text()) for p in (own, every)}
    assert records[own]["generator_images"] == "own_cluster"
    assert records[every]["generator_images"] == "all"
    assert records[every]["config"]["train.generator_images"] == "all"
    deltas = {p: torch.load(p / "perturbations.pt", weights_only=True)["deltas"]
              for p in (own, every)}
    assert not torch.equal(deltas[own], deltas[every])


def test_shards_of_another_data_set_are_refused(tmp_path):
    shards = tmp_path / "shards"
    hpcue("data", "prepare", "digits", "--out", str(shards), "--image-size", "16")
    proc = hpcue("run", "--out", str(tmp_path / "run"), *tiny_sets(
        [f"data.shards={shards}", "data.dataset=imagefolder"]), check=False)
    assert proc.returncode == 2
    assert f"{shards} holds 'digits' but the config says data.dataset='imagefolder'" in proc.stderr
