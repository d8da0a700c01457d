"""Typed run configuration: every default lives here, YAML files and ``--set`` only override.

The defaults are the embedded debugging run (digits, small CNNs, CPU sizes), so ``hpcue run``
with no arguments works from any install. The paper's setting lives in ``configs/paper*.yaml``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from hpcue.distributed.launchers import LAUNCHER_CHOICES
from hpcue.errors import ConfigError, did_you_mean
from hpcue.io import atomic_write_text

__all__ = ["ConfigError", "RunConfig", "check_consistency", "load_config", "save_config"]

#: names that become a path component or a job name (runs, sweeps, machines): no separators,
#: no "..", no spaces, nothing a shell or a scheduler directive reads as something else
PLAIN_NAME = re.compile(r"(?!.*\.\.)[A-Za-z0-9][A-Za-z0-9_.-]*")


def plain_name(value: str) -> str:
    """``value`` if it is a plain name (``PLAIN_NAME``), else a ValueError that says why."""
    if not PLAIN_NAME.fullmatch(value):
        raise ValueError(f"{value!r} is not a plain name: letters, digits, _ . - only, "
                         f"starting with a letter or digit, no '..'")
    return value


class _Section(BaseModel):
    # NaN and infinity pass every range check (inf > 0); no setting means either
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class DataConfig(_Section):
    """Which data set, where its files are, and the image geometry the pipeline works at."""

    dataset: str = "digits"
    root: Path | None = None       # raw files; prepared into <run>/data when shards is unset
    shards: Path | None = None     # a directory written by `hpcue data prepare`
    num_shards: int = Field(4, ge=1)
    cache: bool = False            # read the splits into memory once (small sets)
    image_size: int = Field(16, ge=8, le=1024)
    test_fraction: float = Field(0.25, gt=0, lt=1)
    # which images are test images where the data set has no official split; None: the seed
    split_seed: int | None = Field(None, ge=0, le=2**32 - 1)
    # auto: what suits the data set (digits: crop, no flip; photos and scans: crop_flip)
    augment: Literal["auto", "none", "crop", "crop_flip"] = "auto"
    num_workers: int = Field(0, ge=0)

    @field_validator("image_size")
    @classmethod
    def _multiple_of_four(cls, value: int) -> int:
        if value % 4:
            raise ValueError(f"image_size must be a multiple of 4 (two stride-2 stages in the "
                             f"generator), got {value}")
        return value

    @field_validator("dataset")
    @classmethod
    def _known_dataset(cls, value: str) -> str:
        from hpcue.data.registry import check_dataset_name

        check_dataset_name(value)
        return value


#: clip_*: CLIP image towers through open-clip-torch with OpenAI's weights (hpcue/models/clip.py
#: maps each to open_clip's model; listed here so that reading a config needs no torch)
SURROGATE_ARCHS = ("small_cnn", "resnet18", "resnet50", "clip_rn50", "clip_rn101", "clip_rn50x4",
                   "clip_rn50x16", "clip_rn50x64", "clip_vit_b32", "clip_vit_b16",
                   "clip_vit_l14", "clip_vit_l14_336")


class SurrogateConfig(_Section):
    """The frozen feature extractor whose clusters UC attacks.

    For the small CNN, ``pretraining`` says where its features come from: ``mnist5k`` (the
    shipped weights, trained on MNIST-5k with MNIST's labels: other data, as the paper's
    ImageNet surrogate; never the protected set's labels), ``self_supervised`` (learned from the
    protected images without labels: rotation prediction or SimCLR, ``pretext``) or
    ``supervised_on_target_labels`` (clusters then follow the classes and UC becomes class-wise
    noise; outside UC's threat model, for comparison only). ``weights`` (a file) overrides it.
    ImageNet ResNets and CLIP towers read their weights from ``weights`` or their library's
    cache folder.
    """

    arch: Literal[SURROGATE_ARCHS] = "small_cnn"  # type: ignore[valid-type]
    weights: Path | None = None
    pretraining: Literal["mnist5k", "self_supervised", "supervised_on_target_labels"] = "mnist5k"
    # the label-free task: rotation prediction, or contrasting two views of each image (SimCLR)
    pretext: Literal["rotation", "simclr"] = "rotation"
    pretrain_epochs: int = Field(15, ge=1)
    pretrain_lr: float = Field(0.05, gt=0)
    pretrain_batch_size: int = Field(64, ge=1)


class ClusterConfig(_Section):
    """K-means over surrogate features."""

    num_clusters: int = Field(10, ge=2)
    n_init: int = Field(5, ge=1)
    max_iter: int = Field(100, ge=1)
    tol: float = Field(1e-6, ge=0)
    # per-rank batch of the feature extraction: fixed, so clusters never depend on a swept batch
    batch_size: int = Field(64, ge=1)
    # a directory shared by runs (a sweep's points): clusters computed once per cluster config,
    # under <shared>/<hash of what determines them>, and reused by every run with that config
    shared: Path | None = None
    # the surrogate's and K-means' randomness; None: the run's seed. Fixed in a sweep, every
    # seed of a point starts from the same clusters (seeds then vary stage 1 and the victims)
    seed: int | None = Field(None, ge=0, le=2**32 - 1)


class _Batching(_Section):
    """Global batch semantics shared by stage 1 and the victim (hpcue/training/batch_plan.py)."""

    global_batch_size: int = Field(64, gt=0)
    lr_scaling: Literal["none", "linear", "sqrt"] = "none"
    base_batch_size: int | None = Field(None, gt=0)  # lr is given for this batch size
    warmup_epochs: float = Field(0.0, ge=0)


class TrainConfig(_Batching):
    """Per-cluster generator training (stage 1 of UC)."""

    epsilon: float = 16 / 255
    target_offset: int = Field(1, ge=1)
    # clamp: clamp(tanh(.), -eps, eps) as the paper; scale: eps * tanh(.), no dead gradients
    bound: Literal["clamp", "scale"] = "clamp"
    # auto: one channel (the same change in R, G and B) when every image of the data set is gray,
    # so the shortcut cannot live in colour the data never had; else 3
    perturbation_channels: Literal["auto", 1, 3] = "auto"
    generator_width: int = Field(16, ge=1)
    generator_blocks: int = Field(2, ge=0)
    epochs: int = Field(30, ge=1)
    # the other reading of "the same training" across batch sizes: exactly this many optimizer
    # steps (epochs then follow from it: as many as those steps need); None: train.epochs
    steps: int | None = Field(None, ge=1)
    # adamw, or the layer-wise adaptive lamb / lars of the large-batch literature (timm's:
    # hpcue/training/optimizers.py); each wants its own lr (lars: about 1, with momentum 0.9)
    optimizer: Literal["adamw", "lamb", "lars"] = "adamw"
    lr: float = Field(3e-3, gt=0)
    weight_decay: float = Field(5e-4, ge=0)
    min_lr: float = Field(1e-6, ge=0)
    # replicate: every rank trains all K generators (DDP); shard: each rank owns K/W of them
    # and only deltas and their gradients travel; auto: shard when there is more than one rank
    generator_parallel: Literal["replicate", "shard", "auto"] = "auto"
    # which images train generator k: own_cluster (cluster k's, all K in one pass: hpcue's) or
    # all (every image, each pulled toward k's target: the UC reference's, K x the work)
    generator_images: Literal["own_cluster", "all"] = "own_cluster"

    @model_validator(mode="after")
    def _adaptive_needs_decay(self) -> TrainConfig:
        """timm's LAMB and LARS adapt a layer's step to its weight norm only where weight decay
        is on (``always_adapt`` off): at 0 LARS would be plain SGD at its lr of about 1."""
        if self.optimizer in ("lamb", "lars") and self.weight_decay == 0:
            raise ValueError(f"train.optimizer={self.optimizer} needs train.weight_decay > 0: "
                             f"timm applies its layer-wise trust ratio only to decayed weights")
        return self

    @field_validator("epsilon")
    @classmethod
    def _eps_range(cls, value: float) -> float:
        if not 0 < value <= 1:
            raise ValueError(f"epsilon must be in (0, 1] (pixel scale), got {value}")
        return value


#: data defenses (grayscale, JPEG at quality 75 or 10, bit depth) and training ones (Cutout,
#: MixUp, CutMix, PGD adversarial training): hpcue/evaluation/defenses.py holds each one's values
DEFENSE_CHOICES = ("grayscale", "jpeg", "jpeg10", "bitdepth", "cutout", "mixup", "cutmix",
                   "adversarial")


#: the contrastive learners ``victim.contrastive`` may name (hpcue/evaluation/contrastive.py)
CONTRASTIVE_CHOICES = ("simclr", "byol")
#: what ``runtime.compile`` may compile (training/speed.py keeps the same tuple)
COMPILE_PARTS = ("generator", "surrogate", "victim")
#: every victim architecture (hpcue/models/victims.py VICTIM_ARCHS; a test keeps the two equal)
VICTIM_ARCH_CHOICES = ("small_cnn", "resnet18", "resnet18_small", "vgg11_bn", "vgg16_bn",
                       "vit_tiny")


class VictimConfig(_Batching):
    """The models trained from scratch on clean data, on the unlearnable set (as is and after
    each defense) and on each baseline's set, ``seeds`` times each; all tested on clean data."""

    arch: Literal[VICTIM_ARCH_CHOICES] = "small_cnn"  # type: ignore[valid-type]
    # more architectures, each trained on the clean and uc sets (arms <arch>:clean, <arch>:uc)
    # with the same seeds and recipe; the worst case over learners takes them in. [] none
    other_archs: list[Literal[VICTIM_ARCH_CHOICES]] = []  # type: ignore[valid-type]
    # victims of each other arch per set (null: victim.seeds; its first seeds)
    other_archs_seeds: int | None = Field(None, ge=1)
    # on W ranks: false, every rank trains every victim on its share of each batch (gradients
    # all-reduced); true, rank r trains victims r, r + W, ... on the whole set alone, nothing
    # exchanged until their results are gathered (the supervised victims; the contrastive
    # learners stay data-parallel)
    spread: bool = False
    # 6 on the digits: with 3, one random-noise victim that locks onto the noise (2 of 10 did,
    # docs/evaluation.md) widens the paired interval past zero; paper configs set 3
    seeds: int = Field(6, ge=1)
    baselines: list[Literal["random", "classwise"]] = ["random", "classwise"]
    # the countermeasures evaluated beside UC (hpcue/evaluation/defenses.py: their parameters
    # and whose they are); the worst case over them is reported
    defenses: list[Literal[DEFENSE_CHOICES]] = [  # type: ignore[valid-type]
        "grayscale", "jpeg10", "bitdepth", "cutout"]
    # the thief also holds clean data: an arm "uc@p" for each share p here trains on the
    # unlearnable version of a share p of the training images and the clean original of the
    # rest (one subset from the run's seed, nested: 0.5's images are among 0.8's); [] none
    mixed: list[float] = []
    # contrastive learners as victims (AUE/AAP's threat): each learns the clean, uc and
    # baseline sets without labels (lightly's SimCLR / BYOL), an online linear probe on its
    # features learns the labels; contrastive_seeds null: victim.seeds. [] none
    contrastive: list[Literal[CONTRASTIVE_CHOICES]] = []  # type: ignore[valid-type]
    contrastive_epochs: int = Field(30, ge=1)
    contrastive_seeds: int | None = Field(None, ge=1)
    # SGD (momentum 0.9, weight decay 5e-4, cosine) as lightly's SimCLR/BYOL examples train
    contrastive_lr: float = Field(0.06, gt=0)
    # the Unlearnable Distance (hpcue/evaluation/sharpness.py): the SAL of each layer of every
    # set's first victim after each epoch (each layer alone moved within a relative L2 ball of
    # ud_radius by ud_iterations passes of SGD at ud_lr, up and down the loss), and each set's
    # UD to the clean one; the reference code's 10, 0.05, 0.1 cost 40 passes over the
    # training set per layer and epoch
    ud: bool = False
    ud_iterations: int = Field(10, ge=1)
    ud_radius: float = Field(0.05, gt=0)
    ud_lr: float = Field(0.1, gt=0)
    epochs: int = Field(8, ge=1)
    lr: float = Field(0.05, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0)

    @model_validator(mode="after")
    def _seed_subsets(self) -> VictimConfig:
        """The other learners take the first of victim.seeds' seeds: no more than there are."""
        for key in ("other_archs_seeds", "contrastive_seeds"):
            value = getattr(self, key)
            if value is not None and value > self.seeds:
                raise ValueError(f"victim.{key} ({value}) is more than victim.seeds "
                                 f"({self.seeds}): they are the first of its seeds")
        return self

    @field_validator("mixed")
    @classmethod
    def _shares(cls, value: list[float]) -> list[float]:
        outside = [p for p in value if not 0 < p < 1]
        if outside:
            raise ValueError(f"each share must lie strictly between 0 and 1 (0 is the clean "
                             f"arm, 1 the uc arm), got {outside[0]}")
        return value

    @field_validator("defenses", "baselines", "mixed", "contrastive", "other_archs")
    @classmethod
    def _each_once(cls, value: list[str]) -> list[str]:
        twice = sorted({v for v in value if value.count(v) > 1})
        if twice:
            raise ValueError(f"listed more than once: {', '.join(twice)}")
        return value


#: every attack ``attack.name`` may name (hpcue/attacks/registry.py; a test keeps the two equal)
ATTACK_CHOICES = ("uc", "em_samplewise", "em_classwise", "aue", "aap", "bayes_error")
#: the settings that only these attacks read (set for another attack: an error)
BILEVEL_ONLY = ("pgd_steps", "step_fraction", "model_steps", "stop_error", "strength")
BAYES_ONLY = ("bayes_steps", "bayes_retrain_epochs", "bayes_sigma", "bayes_lr")


class AttackConfig(_Section):
    """Which attack stage 1 runs, and the settings of the bilevel ones (error-minimizing noise,
    AUE, AAP: hpcue/attacks/bilevel/). UC's own settings are ``train``'s; every attack shares
    ``train.epsilon``, and EM and AUE take ``train.epochs`` as their most epochs (AAP: its
    ``reference_epochs`` and one crafting pass). A setting left null takes the attack's
    published value (hpcue/attacks/bilevel/attack.py, in results.json)."""

    name: Literal[ATTACK_CHOICES] = "uc"  # type: ignore[valid-type]
    # PGD steps each batch's noise takes (EM 20 sample-wise, 1 class-wise; AUE 5; AAP 250)
    pgd_steps: int | None = Field(None, ge=1)
    # each PGD step moves a pixel by this fraction of epsilon (EM, AUE 0.1; AAP 0.01)
    step_fraction: float | None = Field(None, gt=0, le=1)
    # the crafting model's steps each round before the noise moves (EM 10; AUE every batch;
    # AAP none once its reference model is trained); null: the attack's
    model_steps: int | None = Field(None, ge=0)
    # stop once the crafting model's error on the perturbed training set is below this
    # (EM 0.01; AUE and AAP run every epoch)
    stop_error: float | None = Field(None, ge=0, lt=1)
    # AUE / AAP: the contrastive-like augmentation's strength (AUE 0.6, AAP 0.4: their CIFAR-10
    # settings; 1 is SimCLR's crop 0.1-1, jitter 0.4, grayscale 0.2)
    strength: float | None = Field(None, gt=0, le=1)
    # AAP: epochs its reference model trains on the clean augmented images first (AAP's 40)
    reference_epochs: int = Field(40, ge=1)
    # the crafting model: this network (EM's is its victims' ResNet-18; the digits' victims are
    # small_cnn), SGD at model_lr, momentum 0.9, weight decay 5e-4, gradients clipped at 5 (EM's)
    model_arch: Literal[VICTIM_ARCH_CHOICES] = "small_cnn"  # type: ignore[valid-type]
    model_lr: float = Field(0.1, gt=0)
    # bayes_error (hpcue/attacks/bayes_error/): its outer steps (AdamW steps on the images; the
    # paper's 2000), the epochs a fresh model_arch retrains on the current images at each step
    # (30), the kernel width on the scaled features (0.3), AdamW's lr (null: 2.0 / bayes_steps,
    # the paper's 1e-3 at 2000). One run retrains bayes_steps x bayes_retrain_epochs epochs.
    bayes_steps: int | None = Field(None, ge=1)
    bayes_retrain_epochs: int | None = Field(None, ge=1)
    bayes_sigma: float | None = Field(None, gt=0)
    bayes_lr: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _settings_of_the_attack(self) -> AttackConfig:
        """A setting the chosen attack never reads is a mistake, not a no-op."""
        bilevel = self.name in ("em_samplewise", "em_classwise", "aue", "aap")
        for keys, applies, which in ((BILEVEL_ONLY, bilevel, "em_samplewise, em_classwise, "
                                      "aue or aap"), (BAYES_ONLY, self.name == "bayes_error",
                                                      "bayes_error")):
            set_here = [k for k in keys if getattr(self, k) is not None]
            if set_here and not applies:
                raise ValueError(f"attack.{set_here[0]} applies to attack.name={which} only, "
                                 f"not {self.name}")
        return self


class RuntimeConfig(_Section):
    """Where and how the work runs; launcher detection fills in the rest."""

    launcher: Literal[LAUNCHER_CHOICES] = "auto"  # type: ignore[valid-type]
    accelerator: Literal["auto", "cpu", "gpu"] = "auto"
    timeout_s: float = Field(600.0, gt=0)   # every collective; a dead rank ends the job
    # how long the other ranks wait while rank 0 alone prepares data or pretrains a surrogate
    setup_timeout_s: float = Field(3600.0, gt=0)
    # per-device limit -> accumulation; auto (GPUs): the largest a trial step fits, halving
    max_micro_batch: int | Literal["auto"] | None = None

    @field_validator("max_micro_batch")
    @classmethod
    def _micro_positive(cls, value: int | str | None) -> int | str | None:
        if isinstance(value, int) and value < 1:
            raise ValueError(f"must be at least 1, 'auto' or null, got {value}")
        return value
    # every training, and the cluster stage's feature extraction; machine profiles choose a
    # mixed one for their GPUs (V100: 16-mixed; A100, H100, MI250X: bf16-mixed)
    precision: Literal["32-true", "16-mixed", "bf16-mixed"] = "32-true"
    # auto: true on CPUs; "warn" on GPUs, where torch raises on ops without a deterministic
    # kernel (some backward passes on some torch versions). false also lets cuDNN autotune.
    deterministic: bool | Literal["warn", "auto"] = "auto"
    # how a training uses a GPU's speed (training/speed.py): each auto takes what
    # benchmarks/gpu_throughput.py measured faster on GPUs (none yet) and is off on CPUs
    channels_last: bool | Literal["auto"] = "auto"
    compile: list[Literal[COMPILE_PARTS]] | Literal["auto"] = "auto"  # type: ignore[valid-type]
    fused_optimizer: bool | Literal["auto"] = "auto"
    pin_memory: bool | Literal["auto"] = "auto"  # the loaders' pages, on GPUs only

    @field_validator("compile")
    @classmethod
    def _parts_once(cls, value: list[str] | str) -> list[str] | str:
        if isinstance(value, list) and len(set(value)) < len(value):
            raise ValueError(f"a part named twice: {value}")
        return value


class RunConfig(_Section):
    """One whole UC run: data -> clusters -> perturbations -> unlearnable set -> evaluation."""

    name: str = "digits-debug"  # the default run directory is runs/<name>
    seed: int = Field(0, ge=0, le=2**32 - 1)  # numpy and Lightning take seeds in this range
    data: DataConfig = DataConfig()
    surrogate: SurrogateConfig = SurrogateConfig()
    cluster: ClusterConfig = ClusterConfig()
    train: TrainConfig = TrainConfig()
    victim: VictimConfig = VictimConfig()
    attack: AttackConfig = AttackConfig()
    runtime: RuntimeConfig = RuntimeConfig()

    _plain_name = field_validator("name")(plain_name)

    @property
    def split_seed(self) -> int:
        return self.seed if self.data.split_seed is None else self.data.split_seed

    @property
    def cluster_seed(self) -> int:
        return self.seed if self.cluster.seed is None else self.cluster.seed

    @model_validator(mode="after")
    def _steps_are_ucs(self) -> RunConfig:
        """train.steps is UC's fixed-steps reading; the bilevel attacks count rounds, not
        optimizer steps (EM's stop rule, AAP's reference epochs)."""
        if self.train.steps is not None and self.attack.name != "uc":
            raise ValueError(f"train.steps applies to attack.name=uc only; "
                             f"{self.attack.name} runs train.epochs rounds (drop train.steps)")
        return self

    @model_validator(mode="after")
    def _lr_rule_needs_a_base(self) -> RunConfig:
        """A scaled lr without the batch it was given for would silently not scale."""
        for section in ("train", "victim"):
            s = getattr(self, section)
            if s.lr_scaling != "none" and s.base_batch_size is None:
                raise ValueError(f"{section}.lr_scaling={s.lr_scaling} needs "
                                 f"{section}.base_batch_size, the global batch {section}.lr "
                                 f"was chosen for")
        return self


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def read_yaml_mapping(path: Path, what: str = "config file") -> dict[str, Any]:
    """One YAML file whose top level is a mapping, or a ConfigError naming the file."""
    if not path.is_file():
        raise ConfigError(f"{what} not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(raw).__name__}")
    return raw


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read one YAML config, following ``base:`` (relative to the file) so paper configs share."""
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"{path}: 'base' chain loops back to itself")
    raw = read_yaml_mapping(path)
    base = raw.pop("base", None)
    if base is None:
        return raw
    if not (path.parent / base).is_file():
        raise ConfigError(_missing_base(path, str(base)))
    return _deep_merge(_read_yaml(path.parent / base, seen + (path,)), raw)


def _missing_base(path: Path, base: str) -> str:
    """A config copied out of the repository keeps ``base:`` relative to its new folder: say
    where the shipped file is (installed or editable) and what else works."""
    from importlib.resources import files

    shipped = files("hpcue._configs").joinpath(base)
    where = (f"the shipped one is {shipped}: copy it beside {path.name} (keeping {base}), "
             if shipped.is_file() else "")
    return (f"{path}: base: {base} not found beside it ({path.parent / base}); {where}give "
            f"base: as a path to the file, or remove base: and set every key here (see "
            f"configs/cpu-imagefolder.yaml: a config for your own images that needs no base)")


def parse_override(item: str) -> tuple[list[str], Any]:
    """``a.b=value`` -> (["a", "b"], value parsed as YAML, so numbers and nulls keep their type)."""
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {item!r}: expected key=value, e.g. train.epochs=3")
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        value = text
    return key.strip().split("."), value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    out = dict(raw)
    for item in overrides:
        keys, value = parse_override(item)
        node = out
        for key in keys[:-1]:
            child = node.get(key)
            node[key] = dict(child) if isinstance(child, dict) else {}
            node = node[key]
        node[keys[-1]] = value
    return out


def known_keys(model: type[BaseModel] | None = None, prefix: str = "") -> list[str]:
    """Every dotted key a config may set (sections and their keys)."""
    model = RunConfig if model is None else model
    keys = []
    for name, field in model.model_fields.items():
        keys.append(f"{prefix}{name}")
        kind = field.annotation
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            keys += known_keys(kind, f"{prefix}{name}.")
    return keys


def _source(where: tuple, file: str | None, overridden: list[list[str]]) -> str:
    """Where a bad key came from: the --set that names it (or a section above it), else the
    config file, else the defaults."""
    for keys in overridden:
        if list(where[:len(keys)]) == keys or keys[:len(where)] == list(where):
            return "--set "
    return f"{file or 'defaults'}: "


def format_errors(exc: ValidationError, file: str | None,
                  overridden: list[list[str]] | None = None) -> str:
    lines = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key" + did_you_mean(where, known_keys())
        lines.append(f"{_source(tuple(err['loc']), file, overridden or [])}{where}: {msg}")
    return "invalid config:\n  " + "\n  ".join(lines)


def build_config(raw: dict[str, Any], file: str | None = None,
                 overridden: list[list[str]] | None = None) -> RunConfig:
    """The validated config; one ConfigError naming every bad key and where it came from."""
    try:
        cfg = RunConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_errors(exc, file, overridden)) from None
    return cfg


def load_config(path: Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Defaults, then the YAML file (with its ``base`` chain), then ``--set`` overrides."""
    raw = _read_yaml(Path(path)) if path is not None else {}
    raw = apply_overrides(raw, overrides or [])
    overridden = [parse_override(item)[0] for item in overrides or []]
    return build_config(raw, str(path) if path is not None else None, overridden)


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config mapping as ``{dotted key: value}`` (how --set and errors name keys)."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out |= flatten(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def dump_config(cfg: RunConfig) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


def save_config(cfg: RunConfig, path: Path) -> None:
    atomic_write_text(path, dump_config(cfg))


def check_consistency(cfg: RunConfig, num_train: int, num_test: int | None = None,
                      world_size: int = 1) -> None:
    """Checks that need the data: K within the training set, every rank some samples, no
    global batch larger than the training set (it would be one padded step an epoch)."""
    if cfg.cluster.num_clusters > num_train:
        raise ConfigError(
            f"cluster.num_clusters={cfg.cluster.num_clusters} is larger than the training set "
            f"of {cfg.data.dataset} ({num_train} images)"
        )
    for section in ("train", "victim"):
        batch = getattr(cfg, section).global_batch_size
        if batch > num_train:
            raise ConfigError(f"{section}.global_batch_size={batch} is larger than the training "
                              f"set of {cfg.data.dataset} ({num_train} images) on {world_size} "
                              f"rank(s): every epoch would be one step, padded with repeats")
    for split, n in (("train", num_train), ("test", num_test)):
        if n is not None and n < world_size:
            raise ConfigError(f"the {split} split of {cfg.data.dataset} has {n} images, fewer "
                              f"than the {world_size} ranks: a rank would have none")
