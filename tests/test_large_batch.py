"""Large-batch training of the generators: LAMB and LARS (timm's) as train.optimizer, warmup in
epochs under any accumulation, and the fixed-steps reading of "the same training"
(train.steps): each checked by what it does, not by its name."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from hpcue.config import ConfigError, load_config
from hpcue.stages.train import budget_epochs
from hpcue.training.lr_schedule import scheduled
from hpcue.training.optimizers import make_optimizer, state_layout
from tests.conftest import hpcue, tiny_sets
from tests.test_distributed import BIN, _env, _run


class TwoScales(torch.nn.Module):
    """Two layers whose weights differ 100x in scale, and a norm layer."""

    def __init__(self) -> None:
        super().__init__()
        self.small = torch.nn.Linear(8, 8)
        self.large = torch.nn.Linear(8, 8)
        self.norm = torch.nn.LayerNorm(8)
        with torch.no_grad():
            self.small.weight.mul_(0.01)
            self.large.weight.mul_(1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.large(self.small(x)))


def _relative_steps(name: str, lr: float) -> dict[str, float]:
    torch.manual_seed(0)
    model = TwoScales()
    opt = make_optimizer(name, model, lr=lr, weight_decay=5e-4)
    before = {k: p.detach().clone() for k, p in model.named_parameters()}
    model(torch.randn(32, 8)).pow(2).sum().backward()
    opt.step()
    return {k: float((p.detach() - before[k]).norm() / before[k].norm())
            for k, p in model.named_parameters() if k.endswith("weight") and p.dim() == 2}


@pytest.mark.parametrize("name, lr, expected", [("lamb", 0.01, 0.01), ("lars", 1.0, 0.001)])
def test_layer_wise_optimizers_step_each_layer_in_proportion_to_its_own_weights(name, lr,
                                                                                 expected):
    """LAMB's step is lr x |w| / |update| x update, LARS's lr x trust x |w| / |g| x g: every
    layer moves by the same fraction of its own weights, whatever their scale (AdamW moves
    each weight by about lr, so its small layer moves 100x more, relatively)."""
    steps = _relative_steps(name, lr)
    for layer, rel in steps.items():
        assert rel == pytest.approx(expected, rel=0.05), (layer, steps)
    adam = _relative_steps("adamw", 0.01)
    assert adam["small.weight"] > 20 * adam["large.weight"]


@pytest.mark.parametrize("name", ["lamb", "lars"])
def test_biases_and_norm_weights_are_neither_decayed_nor_adapted(name):
    opt = make_optimizer(name, TwoScales(), lr=0.1, weight_decay=5e-4)
    groups = {g["weight_decay"]: len(g["params"]) for g in opt.param_groups}
    assert groups == {5e-4: 2, 0.0: 4}  # two weight matrices; two biases, norm weight, bias
    assert type(opt).__module__.startswith("timm.optim")


def test_the_optimizer_state_layout_names_what_each_keeps():
    model = TwoScales()
    for name, keys in (("adamw", {"exp_avg", "exp_avg_sq", "step"}),
                       ("lamb", {"exp_avg", "exp_avg_sq"}), ("lars", {"momentum_buffer"})):
        opt = make_optimizer(name, model, lr=0.01, weight_decay=5e-4)
        model(torch.randn(4, 8)).sum().backward()
        opt.step()
        layout = state_layout(opt, model.parameters())
        assert {k for entries in layout for k, _, _ in entries} == keys, name


def _trainer(batches: int, epochs: int, accumulate: int = 1, max_steps: int = -1):
    """What ``scheduled`` reads from a Trainer."""
    steps = math.ceil(batches / accumulate) * epochs
    return SimpleNamespace(estimated_stepping_batches=min(steps, max_steps) if max_steps > 0
                           else steps, num_training_batches=batches, max_epochs=epochs,
                           accumulate_grad_batches=accumulate, max_steps=max_steps)


def _lrs(trainer, warmup_epochs: float, accumulate: int = 1, n: int = 40) -> list[float]:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = scheduled(opt, trainer, warmup_epochs, 0.0, accumulate=accumulate)
    sched = sched["lr_scheduler"]["scheduler"]
    out = []
    for _ in range(n):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


@pytest.mark.parametrize("trainer_acc, module_acc", [(1, 1), (2, 1), (1, 2)])
def test_warmup_is_given_in_epochs_under_any_accumulation(trainer_acc, module_acc):
    """8 micro-batches an epoch, 2 accumulated (by the Trainer or by a sharded module): 4
    optimizer steps an epoch, so 2 warmup epochs are 8 rising steps, then the peak."""
    per_epoch = 8 // max(trainer_acc, module_acc)
    lrs = _lrs(_trainer(8, 10, trainer_acc), 2, module_acc)
    warm = 2 * per_epoch
    assert all(a < b for a, b in zip(lrs[:warm], lrs[1:warm + 1], strict=True))
    assert lrs[warm] == pytest.approx(1.0)
    assert lrs[0] < 0.15
    no_warmup = _lrs(_trainer(8, 10, trainer_acc), 0, module_acc)
    assert no_warmup[0] == pytest.approx(1.0)


@pytest.mark.parametrize("module_acc", [1, 2])
def test_the_cosine_ends_where_a_fixed_number_of_steps_does(module_acc):
    lrs = _lrs(_trainer(8, 100, 1, max_steps=12), 0, module_acc, n=13)
    assert lrs[11] < 0.03 and lrs[12] == pytest.approx(0.0, abs=1e-9)


def test_fixed_steps_give_stage_1_the_epochs_they_need():
    assert budget_epochs(30, None, 22) == 30
    assert budget_epochs(30, 100, 22) == 5
    assert budget_epochs(30, 88, 22) == 4
    assert budget_epochs(30, 3, 22) == 1


def test_bad_large_batch_settings_are_config_errors():
    with pytest.raises(ConfigError, match="train.optimizer"):
        load_config(None, ["train.optimizer=sgd"])
    with pytest.raises(ConfigError, match="train.steps"):
        load_config(None, ["train.steps=0"])
    with pytest.raises(ConfigError, match="train.optimizer=lars needs train.weight_decay > 0"):
        load_config(None, ["train.optimizer=lars", "train.weight_decay=0"])


@pytest.fixture(scope="module")
def clustered(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("large_batch") / "base"
    hpcue("cluster", "--out", str(out), *SETS)
    return out


SETS = tiny_sets(["runtime.timeout_s=60", "surrogate.pretraining=self_supervised",
                  "data.test_fraction=0.252"])  # 1344 training images


def _train(base: Path, out: Path, *sets: str, ranks: int = 1) -> dict:
    shutil.copytree(base, out)
    launch = [str(BIN / "mpiexec"), "-n", str(ranks), str(BIN / "hpcue")] if ranks > 1 \
        else [str(BIN / "hpcue")]
    args = [*SETS]
    for item in sets:
        args += ["--set", item]
    _run([*launch, "train", "--force", "--out", str(out), *args], _env())
    return json.loads((out / "stages" / "train.json").read_text())


def test_a_fixed_number_of_steps_is_exactly_what_stage_1_takes(clustered, tmp_path):
    """1344 images at batch 64: 21 steps an epoch; 30 steps end in the second epoch, and the
    epochs reading takes its epochs' steps."""
    steps = _train(clustered, tmp_path / "steps", "train.steps=30",
                   "train.global_batch_size=64", "train.optimizer=lamb", "train.lr=0.01")
    assert steps["budget"] == {"reading": "steps", "epochs": 2, "optimizer_steps": 30}
    assert steps["optimizer"] == "lamb"
    epochs = _train(clustered, tmp_path / "epochs", "train.global_batch_size=64")
    assert epochs["budget"] == {"reading": "epochs", "epochs": 2, "optimizer_steps": 42}
    assert epochs["optimizer"] == "adamw"


def test_sharded_lars_checkpoints_the_state_replicate_does(clustered, tmp_path):
    """LARS keeps a momentum buffer, not Adam's moments: the epoch's gather must carry whatever
    the optimizer keeps to the ranks that never stepped a generator, so shard's checkpoint
    equals replicate's after one step (the momentum buffer is the first step's update)."""
    one_step = ("train.epochs=1", "train.global_batch_size=1344", "train.optimizer=lars",
                "train.lr=1.0")
    for mode in ("replicate", "shard"):
        _train(clustered, tmp_path / mode, *one_step, f"train.generator_parallel={mode}",
               ranks=2)
    ca, cb = (torch.load(tmp_path / m / "checkpoints" / "train" / "last.ckpt",
                         weights_only=True) for m in ("replicate", "shard"))
    sa, sb = ca["optimizer_states"][0]["state"], cb["optimizer_states"][0]["state"]
    assert sa.keys() == sb.keys() and len(sa) > 0
    assert all(set(sa[i]) == set(sb[i]) == {"momentum_buffer"} for i in sa)
    scale = max(float(v["momentum_buffer"].abs().max()) for v in sa.values())
    for i in sa:
        torch.testing.assert_close(sb[i]["momentum_buffer"], sa[i]["momentum_buffer"],
                                   rtol=1e-4, atol=1e-5 * scale)


def test_sharded_generators_after_a_fixed_number_of_steps_equal_replicates(clustered,
                                                                           tmp_path):
    """30 steps at 21 an epoch end mid-epoch: the last step must gather every rank's
    generators, or rank 0 writes the other rank's deltas as they were an epoch before."""
    steps = ("train.steps=30", "train.global_batch_size=64")
    records = {m: _train(clustered, tmp_path / m, *steps, f"train.generator_parallel={m}",
                         ranks=2) for m in ("replicate", "shard")}
    assert {m: r["budget"]["optimizer_steps"] for m, r in records.items()} == {
        "replicate": 30, "shard": 30}
    a, b = (torch.load(tmp_path / m / "perturbations.pt", weights_only=True)["deltas"]
            for m in ("replicate", "shard"))
    diff = (a - b).abs()
    # the tolerance of test_generator_sharding's shard-against-replicate check
    assert float(diff.mean()) < 5e-3, float(diff.mean())
    # rank 1 owns generators 5-9: had the last step not synced them, rank 0 would write them
    # 9 steps (an epoch) behind. Seen here: rank 1's deltas 1e-8 from replicate's and rank 0's
    # 6e-3 (float order); without the sync rank 1's were 7e-4 off, which the mean above misses
    own, other = float(diff[:5].mean()), float(diff[5:].mean())
    assert other < 0.1 * own + 1e-5, (own, other)
