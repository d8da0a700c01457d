"""runtime.max_micro_batch: auto, on a CPU with an injected out-of-memory error: the ranks agree
on the largest micro batch that fits, and a real module's trial step leaves nothing behind."""

import pytest
import torch

from hpcue.config import ConfigError, load_config
from hpcue.evaluation.ensemble import VictimEnsemble, identity
from hpcue.models.small_cnn import SmallCNN
from hpcue.stages.context import StageContext
from hpcue.training.batch_plan import plan_batches
from hpcue.training.micro_batch import probe_micro_batch, random_batch, step_trial
from tests.test_one_pass import _module


def _plan(per_rank_times_world=96, world=2):
    return plan_batches("train", per_rank_times_world, world, None, 0.1, "none", None, 0)


def _oom_above(limit, calls):
    def trial(micro):
        calls.append(micro)
        if micro > limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (injected)")
    return trial


def test_halves_until_it_fits_and_records_what_it_tried():
    calls = []
    plan = probe_micro_batch(_plan(), _oom_above(10, calls), lambda failed: failed)
    assert calls == [48, 24, 12, 6]  # divisors of the per-rank batch of 48
    assert plan.micro_batch_size == 6 and plan.accumulate_grad_batches == 8
    assert plan.micro_batch_tried == (48, 24, 12, 6)
    assert plan.per_rank_batch_size == 48 and plan.global_batch_size == 96  # same optimisation


def test_every_rank_takes_the_size_the_fullest_rank_holds():
    calls = []
    # this rank holds everything, another rank only 24: the all-reduce says so
    plan = probe_micro_batch(_plan(), _oom_above(10**6, calls),
                             lambda failed: failed or calls[-1] > 24)
    assert calls == [48, 24] and plan.micro_batch_size == 24


def test_no_size_fits_is_one_clear_error():
    with pytest.raises(ConfigError, match=r"train: out of device memory even at a micro batch "
                                          r"of 1 \(tried 48, 24, 12, 6, 3, 1\)"):
        probe_micro_batch(_plan(), _oom_above(0, []), lambda failed: failed)


def test_other_errors_are_not_taken_for_a_full_gpu():
    def broken(micro):
        raise RuntimeError("a bug, not memory")
    with pytest.raises(RuntimeError, match="a bug"):
        probe_micro_batch(_plan(), broken, lambda failed: failed)


def _state(module):
    return {k: v.clone() for k, v in module.state_dict().items()}


def test_trial_steps_of_the_real_modules_leave_them_untouched():
    uc = _module(torch.arange(40) % 4)
    before = _state(uc)
    step_trial(uc, lambda m: random_batch(m, 16, 10, 40), torch.device("cpu"))(8)
    assert all(p.grad is None for p in uc.parameters()) and uc._present is None
    members = [SmallCNN(10, width=4), SmallCNN(10, width=4)]
    ens = VictimEnsemble(members, ["a", "b"], [0, 1], [identity, identity], lr=0.1,
                         momentum=0.9, weight_decay=0.0)
    ens_before = _state(ens)
    step_trial(ens, lambda m: {n: random_batch(m, 16, 10, 40) for n in ("a", "b")},
               torch.device("cpu"))(4)
    assert all(p.grad is None for p in ens.parameters())
    for module, state in ((uc, before), (ens, ens_before)):  # batch-norm statistics included
        after = module.state_dict()
        assert all(torch.equal(state[k], after[k]) for k in state)


def test_auto_on_a_cpu_sets_no_limit():
    cfg = load_config(None, ["runtime.max_micro_batch=auto"])
    ctx = StageContext.build(cfg, run=None)  # type: ignore[arg-type]
    plan = ctx.plans["train"]
    assert plan.micro_batch_size == plan.per_rank_batch_size and plan.micro_batch_tried == ()
    assert ctx.probed_plan("train", None, None) is plan  # type: ignore[arg-type]
