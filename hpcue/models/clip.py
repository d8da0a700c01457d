"""CLIP image towers with OpenAI's weights as UC surrogates: the paper's strongest setting.

The UC reference (jiamingzhang94/Unlearnable-Clusters, models/clipResnet.py) clusters and attacks
the output of CLIP's image encoder (the ResNet with its attention pool: 1024-d for RN50), not
L2-normalised, on inputs normalised with CLIP's mean/std. ``ClipImageTower`` gives the same
features through open_clip: ``model.visual(x)``, what ``encode_image(x)`` returns.

Weights come from disk only, as for the ImageNet ResNets: a local file, or the cache where
open_clip itself puts OpenAI's weights (the Hugging Face hub cache, or ``~/.cache/clip`` when
open_clip downloads from OpenAI's URL). Loading is strict, keys and shapes checked here before
anything is copied: open_clip's ``load_checkpoint`` would silently interpolate a positional
embedding of another resolution. open_clip is optional: it is imported only when a CLIP arch is
used.
"""

from __future__ import annotations

import inspect
import os
import warnings
import zipfile
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from hpcue.errors import InputError
from hpcue.models.surrogate import MissingWeightsError, Surrogate


class ClipArch(NamedTuple):
    """An open_clip model config and the pretrained tag whose weights it reads. The -quickgelu
    configs are the ones OpenAI's weights were trained with (the plain names use nn.GELU)."""

    model: str
    tag: str = "openai"


# every CLIP image tower open_clip knows OpenAI weights for
CLIP_ARCHS: dict[str, ClipArch] = {
    "clip_rn50": ClipArch("RN50-quickgelu"),
    "clip_rn101": ClipArch("RN101-quickgelu"),
    "clip_rn50x4": ClipArch("RN50x4-quickgelu"),
    "clip_rn50x16": ClipArch("RN50x16-quickgelu"),
    "clip_rn50x64": ClipArch("RN50x64-quickgelu"),
    "clip_vit_b32": ClipArch("ViT-B-32-quickgelu"),
    "clip_vit_b16": ClipArch("ViT-B-16-quickgelu"),
    "clip_vit_l14": ClipArch("ViT-L-14-quickgelu"),
    "clip_vit_l14_336": ClipArch("ViT-L-14-336-quickgelu"),
}

# keys OpenAI's TorchScript archives carry besides the weights (open_clip drops them too)
_OPENAI_EXTRA_KEYS = ("input_resolution", "context_length", "vocab_size")


def _open_clip():
    """open_clip, or an InputError saying how to install it (an optional dependency)."""
    try:
        import open_clip
    except ImportError as exc:
        raise InputError(f"CLIP surrogates need open_clip, which is not installed ({exc}): "
                         f"pip install open-clip-torch (hpcue's `clip` extra)") from None
    return open_clip


def _arch(arch: str) -> ClipArch:
    if arch not in CLIP_ARCHS:
        raise InputError(f"unknown CLIP surrogate arch {arch!r}: expected one of "
                         f"{list(CLIP_ARCHS)}")
    return CLIP_ARCHS[arch]


def _pretrained_cfg(arch: str) -> dict:
    spec = _arch(arch)
    cfg = _open_clip().pretrained.get_pretrained_cfg(spec.model, spec.tag)
    if not cfg:
        raise InputError(f"this open_clip knows no {spec.tag!r} weights for {spec.model} "
                         f"({arch}); open-clip-torch 3.3 does")
    return cfg


def hf_hub_cache() -> Path:
    """The Hugging Face hub cache as huggingface_hub computes it (HF_HUB_CACHE, else
    HUGGINGFACE_HUB_CACHE, else $HF_HOME/hub, HF_HOME defaulting to
    $XDG_CACHE_HOME/huggingface or ~/.cache/huggingface), read from the environment now: its own
    constant is fixed when it is first imported."""
    def expand(p: str) -> str:
        return os.path.expandvars(os.path.expanduser(p))

    default_home = os.path.join(os.path.expanduser("~"), ".cache")
    hf_home = expand(os.getenv("HF_HOME", os.path.join(os.getenv("XDG_CACHE_HOME", default_home),
                                                       "huggingface")))
    legacy = os.getenv("HUGGINGFACE_HUB_CACHE", os.path.join(hf_home, "hub"))
    return Path(expand(os.getenv("HF_HUB_CACHE", legacy)))


def openai_url_cache() -> Path:
    """Where open_clip puts a file it downloads from OpenAI's URL (it honours no variable)."""
    return Path(os.path.expanduser("~/.cache/clip"))


def _hf_files(filename: str) -> list[str]:
    """The files open_clip asks the hub for, in its order: the safetensors twin first."""
    constants = _open_clip().constants
    if filename == constants.HF_WEIGHTS_NAME:
        return [constants.HF_SAFE_WEIGHTS_NAME, filename]
    if filename.endswith((".bin", ".pth")):
        return [filename[:-4] + ".safetensors", filename]
    return [filename]


def _hf_location(arch: str) -> tuple[str, list[str]] | None:
    """(hub repo id, files) open_clip would fetch for ``arch``, or None if it uses no hub."""
    hf_hub = _pretrained_cfg(arch).get("hf_hub", "")
    if not hf_hub:
        return None
    repo_id, filename = os.path.split(hf_hub)
    return repo_id, _hf_files(filename or _open_clip().constants.HF_WEIGHTS_NAME)


def _url_file(arch: str) -> Path | None:
    url = _pretrained_cfg(arch).get("url", "")
    return openai_url_cache() / os.path.basename(url) if url else None


def cached_clip_weights(arch: str) -> Path | None:
    """The weights open_clip downloaded for ``arch``, found without the network: the hub cache
    (where open_clip downloads when huggingface_hub is installed, as it is with open_clip),
    then open_clip's URL cache; None if neither has them."""
    location = _hf_location(arch)
    if location is not None:
        try:
            from huggingface_hub import try_to_load_from_cache
        except ImportError:
            pass
        else:
            repo_id, files = location
            for name in files:
                found = try_to_load_from_cache(repo_id, name, cache_dir=hf_hub_cache())
                if isinstance(found, str) and Path(found).is_file():
                    return Path(found)
    url_file = _url_file(arch)
    return url_file if url_file is not None and url_file.is_file() else None


def fetch_command(arch: str) -> str:
    """The line that, run where there is internet with this job's cache variables, puts
    ``arch``'s weights where ``cached_clip_weights`` looks."""
    spec = _arch(arch)
    return (f"python -c \"import open_clip; open_clip.create_model_and_transforms("
            f"'{spec.model}', pretrained='{spec.tag}')\"")


def _missing_message(arch: str) -> str:
    spec = _arch(arch)
    places = []
    location = _hf_location(arch)
    if location is not None:
        repo_id, files = location
        repo_dir = hf_hub_cache() / f"models--{repo_id.replace('/', '--')}"
        places.append(f"{repo_dir}/snapshots/<revision>/{' or '.join(files)} (the Hugging Face "
                      f"hub cache: HF_HUB_CACHE, else HF_HOME/hub)")
    url_file = _url_file(arch)
    if url_file is not None:
        places.append(f"{url_file} (open_clip's own cache; OpenAI's file is "
                      f"{_pretrained_cfg(arch)['url']})")
    return (f"CLIP weights for {arch} (open_clip {spec.model}, pretrained={spec.tag!r}) not "
            f"found; looked in: {'; '.join(places)}. On a node with internet and the same "
            f"HF_HOME/HF_HUB_CACHE, run: {fetch_command(arch)} ; or place OpenAI's file at the "
            f"path above, or set surrogate.weights to a local file. hpcue never downloads.")


def require_clip_weights(arch: str, weights: Path | None) -> Path:
    """The weights file ``build_clip_surrogate`` will read, or MissingWeightsError naming where
    it belongs. Cheap: nothing is read; open_clip must be installed."""
    _arch(arch)
    _open_clip()
    if weights is not None:
        if not Path(weights).is_file():
            raise MissingWeightsError(f"CLIP weights for {arch} not found at {weights} "
                                      f"(surrogate.weights)")
        return Path(weights)
    found = cached_clip_weights(arch)
    if found is None:
        raise MissingWeightsError(_missing_message(arch))
    return found


def _is_torchscript(path: Path) -> bool:
    """OpenAI's own .pt files are TorchScript archives (a zip with constants.pkl)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any(n.split("/", 1)[-1] == "constants.pkl" for n in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def read_clip_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """The state dict in ``path`` through open_clip's own reader (safetensors, a torch state
    dict, OpenAI's TorchScript archive); any unreadable file is one InputError naming it."""
    load_state_dict = _open_clip().factory.load_state_dict
    scripted = _is_torchscript(path)
    kwargs = {}
    if "weights_only" in inspect.signature(load_state_dict).parameters:
        kwargs["weights_only"] = not scripted  # a TorchScript archive needs torch.jit.load
    try:
        with warnings.catch_warnings():  # torch.load's TorchScript notice, jit's deprecation
            warnings.simplefilter("ignore", UserWarning)
            warnings.simplefilter("ignore", FutureWarning)
            state = load_state_dict(str(path), **kwargs)
    except Exception as exc:  # torch, safetensors and open_clip raise several types
        raise InputError(f"{path}: not a readable CLIP checkpoint ({type(exc).__name__}: "
                         f"{exc})") from None
    if not isinstance(state, dict) or not state:
        raise InputError(f"{path}: not a CLIP checkpoint (no state dict in it)")
    for key in _OPENAI_EXTRA_KEYS:
        state.pop(key, None)
    return state


def _listed(names: list[str], limit: int = 3) -> str:
    more = f", ... ({len(names)} in all)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def _problems(state: dict, expected: dict[str, torch.Size]) -> list[str]:
    """What keeps ``state`` from loading strictly where ``expected`` (key -> shape) is."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [f"{k}: file {tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__}"
             f", model {tuple(expected[k])}" for k, v in state.items()
             if k in expected and (not isinstance(v, torch.Tensor) or v.shape != expected[k])]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys ({_listed(missing)})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys ({_listed(unexpected)})")
    if wrong:
        problems.append(f"{len(wrong)} shapes differ ({_listed(wrong)})")
    return problems


def _shapes(module: nn.Module) -> dict[str, torch.Size]:
    return {k: v.shape for k, v in module.state_dict().items()}


def _visual_state(state: dict, model: nn.Module, path: Path, arch: str) -> dict:
    """The image tower's weights from a full CLIP checkpoint or from the tower alone (bare or
    ``visual.`` keys), after checking every key and shape of what the file holds: a file of
    another architecture fails here, whole, rather than load in part."""
    with_prefix = [k.startswith("visual.") for k in state]
    full = any(with_prefix) and not all(with_prefix)
    if not full:
        state = {k.removeprefix("visual."): v for k, v in state.items()}
    problems = _problems(state, _shapes(model if full else model.visual))
    if problems:
        raise InputError(f"{path}: weights do not match open_clip {CLIP_ARCHS[arch].model} "
                         f"({arch}): {'; '.join(problems)}")
    if full:
        state = {k.removeprefix("visual."): v for k, v in state.items() if k.startswith("visual.")}
    return state


def _meta_clip(arch: str) -> nn.Module:
    """The whole CLIP model on the meta device: every key and shape, no memory, no random
    weights that could ever be used by mistake."""
    open_clip = _open_clip()
    cfg = open_clip.factory.get_model_config(CLIP_ARCHS[arch].model)
    if cfg is None or cfg.pop("custom_text", False):
        raise InputError(f"open_clip has no plain CLIP config {CLIP_ARCHS[arch].model} ({arch})")
    with torch.device("meta"):
        return open_clip.model.CLIP(**cfg)


class ClipImageTower(nn.Module):
    """CLIP's image encoder as a surrogate backbone: CLIP-normalised images in, the image
    embedding (``encode_image``, not L2-normalised, as the UC reference takes it) out.

    Images of another size are resized here, bicubic with antialiasing as CLIP's own
    preprocessing, to the tower's ``image_size`` (224; 288 to 448 for RN50x4/x16/x64 and
    ViT-L-14-336): the ResNets' attention pool and the ViTs' positional embedding take only
    that size. The resize is differentiable, so UC's gradients reach the perturbation at the
    data's own size. A non-square image is squashed (CLIP's preprocessing would crop its
    centre).
    ``fc`` is an Identity so ``Surrogate`` can take it like a ResNet.
    """

    def __init__(self, visual: nn.Module):
        super().__init__()
        size = visual.image_size
        self.image_size: tuple[int, int] = (size, size) if isinstance(size, int) else tuple(size)
        self.visual = visual
        self.fc = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != self.image_size:
            x = F.interpolate(x, size=self.image_size, mode="bicubic", align_corners=False,
                              antialias=True)
        return self.fc(self.visual(x))


def load_clip_image_tower(arch: str, weights: Path | None = None) -> ClipImageTower:
    """``arch``'s image tower with the weights from ``weights`` or open_clip's cache; a file
    that is not exactly this architecture's checkpoint is an InputError naming it."""
    path = require_clip_weights(arch, weights)
    state = read_clip_checkpoint(path)
    model = _meta_clip(arch)
    visual_state = _visual_state(state, model, path, arch)
    try:  # assign: the file's tensors replace the meta ones, nothing is initialised
        model.visual.load_state_dict(visual_state, strict=True, assign=True)
    except RuntimeError as exc:
        raise InputError(f"{path}: weights do not match open_clip {CLIP_ARCHS[arch].model} "
                         f"({arch}): {exc}") from None
    visual = model.visual
    left = [n for n, t in [*visual.named_parameters(), *visual.named_buffers()] if t.is_meta]
    if left:  # a tensor no file sets (a non-persistent buffer): never run it uninitialised
        raise RuntimeError(f"open_clip {CLIP_ARCHS[arch].model}: {_listed(left)} not in a "
                           f"checkpoint; hpcue cannot build this tower")
    return ClipImageTower(visual.float())


def build_clip_surrogate(arch: str, weights: Path | None = None) -> Surrogate:
    """Frozen, always-eval CLIP surrogate: [0,1] images of any size in, image embeddings out."""
    constants = _open_clip().constants
    return Surrogate(load_clip_image_tower(arch, weights), constants.OPENAI_DATASET_MEAN,
                     constants.OPENAI_DATASET_STD)
