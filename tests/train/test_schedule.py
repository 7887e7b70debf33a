"""The WSD learning-rate schedule (optim.schedule=wsd) and its plan: the LR curve, the cooldown
and branch steps, the fixed-batch budget plan, and the run id."""
import math

import pytest
from hydra import compose, initialize_config_dir

from tests.conftest import REPO
from train.config import register_configs
from train.plan import make_plan
from train.plan.errors import BudgetError, ConfigError
from train.plan.schedule import branch_step, cooldown_steps, plan_fixed_batch, steps_for_batch
from train.run.optim import lr_at

register_configs()


def cfg(*overrides: str):
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        return compose("train", overrides=["model.params=2e4", "budget.flops=5e9", "model.seq_len=64",
                                           "model.tie_embeddings=true", "data.vocab_size=512",
                                           "optim.batch_tokens=1024", *overrides])


def test_wsd_curve_warmup_constant_then_one_minus_sqrt_cooldown():
    total, warmup, cooldown, peak, final = 100, 5, 20, 2e-3, 0.1
    lrs = [lr_at(s, total, peak, warmup, final, "wsd", cooldown) for s in range(total)]
    assert lrs[:warmup] == [peak * (s + 1) / warmup for s in range(warmup)]
    assert lrs[warmup:total - cooldown + 1] == [peak] * (total - cooldown + 1 - warmup)  # first cooldown step at peak
    assert lrs[-1] == pytest.approx(final * peak, rel=1e-12)  # the same end as cosine
    assert lr_at(total - 1, total, peak, warmup, final) == pytest.approx(lrs[-1], rel=1e-12)
    for i, step in enumerate(range(total - cooldown, total)):  # 1 - sqrt(progress), progress 0 -> 1
        progress = i / (cooldown - 1)
        assert lrs[step] == pytest.approx(peak * (final + (1 - final) * (1 - math.sqrt(progress))), rel=1e-12)
    decay = lrs[total - cooldown:]
    assert all(a > b for a, b in zip(decay, decay[1:]))
    # the 1-sqrt shape falls fastest at the start: half way through, it has covered 1-sqrt(0.5) = 71%
    mid = lrs[total - cooldown + (cooldown - 1) // 2]
    assert (peak - mid) / (peak - final * peak) > 0.65


def test_cosine_is_unchanged_and_the_default():
    assert cfg().optim.schedule == "cosine" and cfg().optim.cooldown_fraction == 0.2
    lrs = [lr_at(s, 50, 1.0, 5, 0.1) for s in range(50)]
    assert lrs[4] == 1.0 and lrs[-1] == pytest.approx(0.1) and lrs[20] < 1.0  # decays from the warmup on
    assert [lr_at(s, 50, 1.0, 5, 0.1, "cosine", 10) for s in range(50)] == lrs


def test_cooldown_and_branch_steps():
    assert cooldown_steps(1000, 0.2) == 200 and branch_step(1000, 0.2) == 800
    assert cooldown_steps(3, 0.1) == 1  # at least one step
    assert branch_step(57, 0.2) == 57 - 11


def test_fixed_batch_plan_lands_within_tolerance_or_says_why():
    plan = plan_fixed_batch(1e10, 1.2e5, "6N", 64, 16, min_steps=20, tolerance=0.01)
    assert plan.batch_seqs == 16 and plan.steps == steps_for_batch(1e10, 1.2e5, 64, 16)[0]
    assert abs(plan.relative_error) <= 0.01 and plan.tokens == plan.steps * 16 * 64
    with pytest.raises(BudgetError, match="budget.flops: cannot land within"):
        plan_fixed_batch(1.2e5 * 64 * 16 * 20.5, 1.2e5, "6N", 64, 16, min_steps=20, tolerance=0.01)
    with pytest.raises(BudgetError, match="min_steps"):
        plan_fixed_batch(1.2e5 * 64 * 16 * 10, 1.2e5, "6N", 64, 16, min_steps=20, tolerance=0.01)


def test_the_schedule_is_part_of_the_run_id():
    cosine, wsd = make_plan(cfg()), make_plan(cfg("optim.schedule=wsd"))
    assert cosine.run_id != wsd.run_id
    assert make_plan(cfg("optim.schedule=wsd", "optim.cooldown_fraction=0.3")).run_id != wsd.run_id
    assert wsd.schedule.cooldown_steps == cooldown_steps(wsd.budget.steps, 0.2)
    assert wsd.to_dict()["schedule"] == "wsd" and cosine.to_dict()["schedule"] == "cosine"
    # a branch is the same run as the one trained from scratch: the trunk's directory is no part of its id
    assert make_plan(cfg("optim.schedule=wsd", "wsd.trunk_dir=/x")).run_id == wsd.run_id
    trunk = make_plan(cfg("optim.schedule=wsd", f"wsd.branch_steps=[{wsd.budget.steps - wsd.schedule.cooldown_steps}]"))
    assert trunk.run_id != wsd.run_id and trunk.end_step == wsd.budget.steps - wsd.schedule.cooldown_steps


@pytest.mark.parametrize("overrides,field", [
    (["optim.schedule=linear"], "optim.schedule"),
    (["optim.schedule=wsd", "optim.cooldown_fraction=1.5"], "optim.cooldown_fraction"),
    (["optim.schedule=wsd", "optim.cooldown_fraction=0.99"], "optim.cooldown_fraction"),  # overlaps the warmup
    (["wsd.trunk_dir=/x"], "wsd"),                                        # a branch needs optim.schedule=wsd
    (["optim.schedule=wsd", "wsd.branch_steps=[10000]"], "wsd.branch_steps"),  # past the cooldown start
])
def test_bad_schedule_settings_name_the_field(overrides, field):
    with pytest.raises(ConfigError, match=f"^{field}"):
        make_plan(cfg(*overrides))
