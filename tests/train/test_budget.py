import math

import pytest

from train.plan.budget import BudgetError, plan_budget
from train.plan.flops import flops_per_token
from train.plan.hparams import deepseek_batch_tokens, deepseek_lr, peak_lr, warmup_steps
from train.plan.shapes import CATALOG, shape_from_params


@pytest.mark.parametrize("budget,target_n", [(3e11, 1e6), (1e12, 3e5), (1e13, 3e6), (6e18, 1.6e8), (1e21, 1e9)])
def test_achieved_flops_within_one_percent(budget, target_n):
    shape = shape_from_params(target_n, 2048 if target_n < 1e8 else 50304, 128 if target_n < 1e8 else 2048)
    fpt = flops_per_token(shape)["6N"]
    plan = plan_budget(budget, fpt, "6N", shape.seq_len, deepseek_batch_tokens(budget))
    assert abs(plan.achieved_flops / budget - 1) <= 0.01
    assert plan.tokens == plan.steps * plan.batch_tokens == plan.steps * plan.batch_seqs * shape.seq_len
    assert plan.achieved_flops == plan.tokens * fpt
    assert plan.steps >= 20


def test_batch_multiple_for_data_parallel():
    fpt = flops_per_token(CATALOG["llama-70m"])["6N"]
    plan = plan_budget(1e18, fpt, "6N", 2048, 5e5, batch_multiple=8)
    assert plan.batch_seqs % 8 == 0
    assert abs(plan.relative_error) <= 0.01


def test_small_budget_shrinks_batch_to_keep_min_steps():
    fpt = 6e6
    plan = plan_budget(1e11, fpt, "6N", 64, target_batch_tokens=64 * 100, min_steps=20)
    assert plan.steps >= 20 and plan.batch_seqs < 100


@pytest.mark.parametrize("budget", [0, -1e12, math.nan, math.inf])
def test_bad_budget_names_the_field(budget):
    with pytest.raises(BudgetError, match="budget.flops"):
        plan_budget(budget, 6e6, "6N", 64, 4096)


def test_budget_smaller_than_one_batch():
    with pytest.raises(BudgetError, match="less than one batch"):
        plan_budget(1e8, 6e6, "6N", 64, 4096)


def test_budget_below_min_steps():
    with pytest.raises(BudgetError, match="min_steps"):
        plan_budget(6e6 * 64 * 10, 6e6, "6N", 64, 4096, min_steps=20)


def test_deepseek_rules_match_the_paper():
    # DeepSeek LLM Sec. 3.1: eta_opt = 0.3118 C^-0.125, B_opt = 0.2920 C^0.3271.
    assert deepseek_lr(1e20) == pytest.approx(0.3118 * 1e20 ** -0.125)
    assert deepseek_batch_tokens(1e20) == pytest.approx(0.2920 * 1e20 ** 0.3271)
    assert peak_lr("deepseek", 1e20, 1, 0.0) == pytest.approx(deepseek_lr(1e20))
    assert peak_lr("constant", 1e20, 1, 3e-3) == 3e-3
    assert peak_lr("deepseek", 1e20, 1, 0.0, override=1e-3) == 1e-3
    table = {"1e6": 1e-2, "1e8": 1e-3}
    assert peak_lr("table", 1e20, 1e7, 0.0, table) == pytest.approx(10 ** -2.5)


def test_warmup_is_a_small_fraction():
    assert warmup_steps(40, 0.05, 1000) == 2
    assert warmup_steps(100_000, 0.05, 1000) == 1000
    assert warmup_steps(5, 0.05, 1000) == 1
