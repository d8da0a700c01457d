"""CLIP surrogates: OpenAI's weights from a file or open_clip's cache only, loaded strictly.

The checkpoints are fabricated with random weights in the exact on-disk formats open_clip's
caches hold: a torch state dict and safetensors in the Hugging Face hub layout, OpenAI's fp16
TorchScript archive in ~/.cache/clip.
"""

from __future__ import annotations

import copy
import re
import sys
import warnings
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

pytest.importorskip("open_clip")  # an optional dependency (the `clip` extra)

from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD  # noqa: E402
from open_clip.factory import get_model_config  # noqa: E402
from open_clip.model import CLIP  # noqa: E402
from open_clip.pretrained import get_pretrained_cfg  # noqa: E402

from hpcue.errors import InputError  # noqa: E402
from hpcue.models.clip import CLIP_ARCHS, ClipImageTower, hf_hub_cache  # noqa: E402
from hpcue.models.surrogate import (  # noqa: E402
    MissingWeightsError,
    Surrogate,
    build_surrogate,
    require_weights,
)

RN50_HUB = "timm/resnet50_clip.openai"
REVISION = "0123456789abcdef0123456789abcdef01234567"


def _clip(name: str) -> CLIP:
    return CLIP(**get_model_config(name)).eval()


@pytest.fixture(scope="module")
def rn50(tmp_path_factory) -> tuple[CLIP, Path]:
    """A random RN50 CLIP (OpenAI's config) and its state dict saved as open_clip saves it;
    batch-norm statistics moved off their defaults, so a load that skips buffers shows."""
    torch.manual_seed(0)
    model = _clip("RN50-quickgelu")
    with torch.no_grad():
        for m in model.visual.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    path = tmp_path_factory.mktemp("rn50") / "open_clip_pytorch_model.bin"
    torch.save(model.state_dict(), path)
    return model, path


@pytest.fixture(scope="module")
def openai_archive(rn50, tmp_path_factory) -> Path:
    """OpenAI's RN50.pt as it downloads: a TorchScript archive, fp16 weights, and the
    input_resolution / context_length / vocab_size entries beside them."""
    model = copy.deepcopy(rn50[0])
    del model._buffers["attn_mask"]  # OpenAI's model keeps its mask out of the state dict
    for key, value in (("input_resolution", 224), ("context_length", 77), ("vocab_size", 49408)):
        model.__dict__.pop(key, None)  # open_clip keeps the last two as plain ints
        model.register_buffer(key, torch.tensor(value))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace_module(model, {"encode_image": torch.rand(1, 3, 224, 224)})
    path = tmp_path_factory.mktemp("openai") / "RN50.pt"
    traced.half().save(str(path))
    return path


@pytest.fixture
def caches(tmp_path, monkeypatch) -> Path:
    """Empty hub and open_clip caches under tmp: HF_HOME and HOME point there."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return tmp_path


def _put_in_hub(file: Path, name: str, repo_id: str = RN50_HUB) -> Path:
    """``file`` laid out as huggingface_hub lays out a download of ``name``: refs/main names
    the snapshot, whose entry links to the file."""
    repo = hf_hub_cache() / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(REVISION)
    entry = repo / "snapshots" / REVISION / name
    entry.parent.mkdir(parents=True, exist_ok=True)
    entry.symlink_to(file)
    return entry


def _reference_features(model: CLIP, x: torch.Tensor) -> torch.Tensor:
    """CLIP's preprocessing by hand (resize, OpenAI mean/std), then ``encode_image``."""
    x = F.interpolate(x, size=224, mode="bicubic", align_corners=False, antialias=True)
    mean = torch.tensor(OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(OPENAI_DATASET_STD).view(1, 3, 1, 1)
    return model.encode_image((x - mean) / std)


def _assert_tower_is(surrogate: Surrogate, reference: dict[str, torch.Tensor]) -> None:
    loaded = surrogate.backbone.visual.state_dict()
    assert loaded.keys() == reference.keys()
    for key, value in reference.items():
        assert loaded[key].dtype == (torch.float32 if value.is_floating_point() else value.dtype)
        assert torch.equal(loaded[key], value.to(loaded[key].dtype)), key


@pytest.fixture(scope="module")
def from_hub(rn50, tmp_path_factory) -> Surrogate:
    """clip_rn50 built from the hub cache once (the build reads 400 MB)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_CACHE", str(tmp_path_factory.mktemp("hub")))
        _put_in_hub(rn50[1], "open_clip_pytorch_model.bin")
        return build_surrogate("clip_rn50", None)


def test_features_are_clips_image_embedding_from_the_hub_cache(rn50, from_hub):
    model, _ = rn50
    assert isinstance(from_hub, Surrogate)
    _assert_tower_is(from_hub, model.visual.state_dict())  # the file's weights, not random
    x = torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        features = from_hub(x)
        assert features.shape == (3, 1024) and torch.isfinite(features).all()
        torch.testing.assert_close(features, _reference_features(model, x))


def test_surrogate_is_frozen_always_eval_and_differentiable_in_its_input(from_hub):
    from_hub.train()
    assert not any(m.training for m in from_hub.modules())
    assert not any(p.requires_grad for p in from_hub.parameters())
    x = torch.rand(2, 3, 64, 64, requires_grad=True)
    from_hub(x).pow(2).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in from_hub.parameters())


def test_cache_lookup_prefers_what_open_clip_downloads(caches, monkeypatch):
    """The hub's safetensors first, then its .bin, then open_clip's URL cache; HF_HUB_CACHE
    beats HF_HOME, as in huggingface_hub. Nothing is read to find them."""
    assert hf_hub_cache() == caches / "hf" / "hub"
    url_file = caches / "home" / ".cache" / "clip" / "RN50.pt"
    url_file.parent.mkdir(parents=True)
    url_file.write_bytes(b"")
    assert require_weights("clip_rn50", None) == url_file
    blob = caches / "blob"
    blob.write_bytes(b"")
    bin_entry = _put_in_hub(blob, "open_clip_pytorch_model.bin")
    assert require_weights("clip_rn50", None) == bin_entry
    safe_entry = _put_in_hub(blob, "open_clip_model.safetensors")
    assert require_weights("clip_rn50", None) == safe_entry
    monkeypatch.setenv("HF_HUB_CACHE", str(caches / "elsewhere"))
    assert require_weights("clip_rn50", None) == url_file


def test_openai_torchscript_archive_in_open_clips_cache_loads(caches, rn50, openai_archive):
    path = caches / "home" / ".cache" / "clip" / "RN50.pt"
    path.parent.mkdir(parents=True)
    path.symlink_to(openai_archive)
    surrogate = build_surrogate("clip_rn50", None)
    _assert_tower_is(surrogate, {k: v.half() if v.is_floating_point() else v
                                 for k, v in rn50[0].visual.state_dict().items()})


@pytest.mark.parametrize("layout", ["safetensors", "image tower alone"])
def test_local_weights_file(caches, rn50, layout):
    """surrogate.weights: a full checkpoint in safetensors, or the image tower's state dict
    alone; the cache is not looked at."""
    from safetensors.torch import save_file

    model = rn50[0]
    if layout == "safetensors":
        path = caches / "clip.safetensors"
        save_file(model.state_dict(), str(path))
    else:
        path = caches / "visual.pt"
        torch.save(model.visual.state_dict(), path)
    surrogate = build_surrogate("clip_rn50", path)
    _assert_tower_is(surrogate, model.visual.state_dict())


def test_checkpoint_of_another_architecture_is_one_error_naming_it(caches):
    with torch.device("meta"):
        rn101 = CLIP(**get_model_config("RN101-quickgelu"))
    path = caches / "rn101.bin"
    torch.save({k: torch.zeros(v.shape, dtype=torch.float16) for k, v in
                rn101.state_dict().items()}, path)
    with pytest.raises(InputError, match=re.escape(str(path))) as err:
        build_surrogate("clip_rn50", path)
    assert "RN50-quickgelu" in str(err.value) and "unexpected keys" in str(err.value)


@pytest.mark.parametrize("kind", ["truncated", "not a checkpoint", "empty state dict"])
def test_unreadable_file_is_one_error_naming_it(caches, rn50, kind):
    """In the cache (an interrupted download) as in surrogate.weights: never random weights."""
    path = caches / "hf-blob"
    if kind == "truncated":
        path.write_bytes(rn50[1].read_bytes()[: 1 << 20])
    elif kind == "not a checkpoint":
        path.write_text("<html>rate limited</html>")
    else:
        torch.save({}, path)
    entry = _put_in_hub(path, "open_clip_pytorch_model.bin")
    for weights, named in ((path, path), (None, entry)):
        with pytest.raises(InputError, match=re.escape(str(named))):
            build_surrogate("clip_rn50", weights)


def test_missing_weights_name_every_place_and_how_to_fetch(caches):
    with pytest.raises(MissingWeightsError) as err:
        require_weights("clip_rn50", None)
    message = str(err.value)
    repo = caches / "hf" / "hub" / "models--timm--resnet50_clip.openai"
    assert f"{repo}/snapshots/<revision>/open_clip_model.safetensors" in message
    assert str(caches / "home" / ".cache" / "clip" / "RN50.pt") in message
    assert ("open_clip.create_model_and_transforms('RN50-quickgelu', pretrained='openai')"
            in message)
    with pytest.raises(MissingWeightsError, match=re.escape(str(caches / "nowhere.pt"))):
        build_surrogate("clip_rn50", caches / "nowhere.pt")


def test_without_open_clip_the_error_says_how_to_install_it(caches, monkeypatch):
    monkeypatch.setitem(sys.modules, "open_clip", None)  # import open_clip raises ImportError
    for call in (require_weights, build_surrogate):
        with pytest.raises(InputError, match="pip install open-clip-torch"):
            call("clip_rn50", caches / "anything.pt")


def test_unknown_clip_arch():
    with pytest.raises(InputError, match="unknown CLIP surrogate arch 'clip_rn51'"):
        require_weights("clip_rn51", None)


def test_vit_tower_resizes_any_input_to_its_image_size():
    from open_clip.transformer import VisionTransformer

    torch.manual_seed(0)
    visual = VisionTransformer(image_size=32, patch_size=16, width=32, layers=1, heads=2,
                               mlp_ratio=2.0, output_dim=8).eval()
    tower = ClipImageTower(visual)
    assert tower.image_size == (32, 32)
    x = torch.rand(2, 3, 20, 20, requires_grad=True)
    out = tower(x)
    resized = F.interpolate(x.detach(), size=32, mode="bicubic", align_corners=False,
                            antialias=True)
    torch.testing.assert_close(out.detach(), visual(resized))
    out.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.parametrize("arch", list(CLIP_ARCHS))
def test_every_arch_is_an_openai_tower_open_clip_knows(arch):
    """Its config is the one OpenAI's weights were trained with (QuickGELU) and open_clip names
    a hub repo and a URL for them."""
    spec = CLIP_ARCHS[arch]
    assert get_model_config(spec.model)["quick_gelu"] is True
    cfg = get_pretrained_cfg(spec.model, spec.tag)
    assert cfg["hf_hub"] and cfg["url"] and cfg["quick_gelu"] is True
    assert cfg["mean"] == OPENAI_DATASET_MEAN and cfg["std"] == OPENAI_DATASET_STD


def test_the_config_accepts_exactly_the_clip_towers_of_the_table():
    from hpcue.config import SURROGATE_ARCHS, load_config

    assert {a for a in SURROGATE_ARCHS if a.startswith("clip_")} == set(CLIP_ARCHS)
    assert load_config(None, ["surrogate.arch=clip_vit_b16"]).surrogate.arch == "clip_vit_b16"
