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


def exhaustive_plan(budget, fpt, seq_len, target_tokens, min_steps=20, multiple=1):
    """The planner's rule by brute force: every batch (0.8-1.25x nominal) x every step count nearby."""
    tokens = budget / fpt
    nominal_seqs = max(multiple, round(target_tokens / seq_len / multiple) * multiple)
    nominal_steps = max(1, round(tokens / (nominal_seqs * seq_len)))
    if nominal_steps < min_steps:
        nominal_seqs = max(multiple, int(tokens / (min_steps * seq_len)) // multiple * multiple)
        nominal_steps = max(1, round(tokens / (nominal_seqs * seq_len)))
    span = max(2, nominal_steps // 20)
    best = None
    for b in range(max(multiple, round(nominal_seqs * 0.8)), round(nominal_seqs * 1.25) + 1):
        if b % multiple:
            continue
        for s in range(max(min_steps, nominal_steps - span), nominal_steps + span + 1):
            key = (abs(s * b * seq_len * fpt / budget - 1), abs(math.log(b / nominal_seqs)))
            if best is None or key < best[0]:
                best = (key, s, b)
    return best[1], best[2]


@pytest.mark.parametrize("budget,fpt,seq_len,target,multiple", [
    (3e11, 6e6, 64, 4096, 1), (1e12, 2e6, 128, 2e4, 2), (7.7e12, 3.3e6, 128, 5e3, 1),
    (2e13, 1.2e7, 256, 6e4, 4), (5e12, 6e5, 64, 1e3, 3)])
def test_closed_form_equals_the_exhaustive_search(budget, fpt, seq_len, target, multiple):
    plan = plan_budget(budget, fpt, "6N", seq_len, target, batch_multiple=multiple)
    assert (plan.steps, plan.batch_seqs) == exhaustive_plan(budget, fpt, seq_len, target, multiple=multiple)


@pytest.mark.parametrize("shape_of,budget", [
    (lambda: CATALOG["llama-70m"], 1e21),   # millions of steps: the old search took 34 s
    (lambda: shape_from_params(1e5, 2048, 1024), 1e17),
    (lambda: shape_from_params(1e5, 2048, 1024), 1e25),  # 3.6e11 steps: the old search never ended
])
def test_extreme_budgets_plan_within_tolerance(shape_of, budget):
    shape = shape_of()
    fpt = flops_per_token(shape)["6N"]
    for world in (1, 8):
        plan = plan_budget(budget, fpt, "6N", shape.seq_len, deepseek_batch_tokens(budget),
                           batch_multiple=world, preferred_multiple=8 * world)
        assert abs(plan.relative_error) <= 0.01
        assert plan.batch_seqs % (8 * world) == 0  # large batches always divide into 8 x world


def test_batches_prefer_multiples_of_eight_per_rank_where_the_budget_allows():
    fpt = flops_per_token(CATALOG["llama-160m"])["6N"]
    nominal = plan_budget(6e18, fpt, "6N", 2048, 4e5)
    assert nominal.batch_seqs % 8  # the rule's batch alone is not a multiple of 8 ...
    for world in (1, 2, 4):
        plan = plan_budget(6e18, fpt, "6N", 2048, 4e5, batch_multiple=world, preferred_multiple=8 * world)
        assert plan.batch_seqs % (8 * world) == 0  # ... the preferred one is
        assert abs(plan.relative_error) <= 0.01
        assert abs(plan.batch_seqs / nominal.batch_seqs - 1) <= 0.25
    # a batch of 6 sequences cannot become a multiple of 8 within 0.8-1.25x: it stays a multiple of 2
    tiny = plan_budget(1.5e11, 6 * 1.05e6, "6N", 128, 768, batch_multiple=2, preferred_multiple=16)
    assert tiny.batch_seqs == 6
