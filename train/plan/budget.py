"""Budget -> tokens -> steps: the D that a FLOP budget C affords a given shape (no torch)."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from train.plan.errors import BudgetError




@dataclass(frozen=True)
class BudgetPlan:
    budget_flops: float
    convention: str
    flops_per_token: float
    tokens: int           # D actually trained: steps x batch_tokens
    steps: int
    batch_seqs: int
    batch_tokens: int
    achieved_flops: float

    @property
    def relative_error(self) -> float:
        return self.achieved_flops / self.budget_flops - 1

    def to_dict(self) -> dict:
        return asdict(self) | {"relative_error": self.relative_error}


def plan_budget(budget_flops: float, flops_per_token: float, convention: str, seq_len: int,
                target_batch_tokens: float, min_steps: int = 20, tolerance: float = 0.01,
                batch_multiple: int = 1) -> BudgetPlan:
    """Choose steps and a global batch (in sequences) so that steps·batch·seq_len·FLOPs/token ≈ C.

    The batch stays near `target_batch_tokens` (from the batch-size rule); both it and the step
    count are adjusted by a few percent where needed to land within `tolerance` of C. The batch
    is a multiple of `batch_multiple` (the data-parallel world size) so every rank gets equal work.
    """
    if not (isinstance(budget_flops, (int, float)) and math.isfinite(budget_flops) and budget_flops > 0):
        raise BudgetError(f"budget.flops: must be a positive finite number, got {budget_flops!r}")
    if not (math.isfinite(tolerance) and 0 < tolerance < 1):
        raise BudgetError(f"budget.tolerance: must lie between 0 and 1 (a fraction of C), got {tolerance}")
    if min_steps < 1:
        raise BudgetError(f"budget.min_steps: must be at least 1, got {min_steps}")
    tokens_wanted = budget_flops / flops_per_token
    min_batch_seqs = batch_multiple
    if tokens_wanted < min_batch_seqs * seq_len:
        raise BudgetError(
            f"budget.flops: {budget_flops:.4g} FLOPs affords {tokens_wanted:.4g} tokens, less than one "
            f"batch of {min_batch_seqs * seq_len} tokens ({min_batch_seqs} x seq_len {seq_len})")

    nominal_seqs = max(min_batch_seqs, round(target_batch_tokens / seq_len / batch_multiple) * batch_multiple)
    nominal_steps = max(1, round(tokens_wanted / (nominal_seqs * seq_len)))
    if nominal_steps < min_steps:
        # Shrink the batch before giving up: a short run needs enough optimizer steps to warm up
        # and decay its learning rate.
        nominal_seqs = max(min_batch_seqs, int(tokens_wanted / (min_steps * seq_len)) // batch_multiple * batch_multiple)
        nominal_steps = max(1, round(tokens_wanted / (nominal_seqs * seq_len)))
    if nominal_steps < min_steps:
        raise BudgetError(
            f"budget.flops: {budget_flops:.4g} FLOPs affords only {nominal_steps} steps of "
            f"{nominal_seqs * seq_len} tokens; budget.min_steps is {min_steps}")

    best = None
    step_span = max(2, nominal_steps // 20)
    for batch_seqs in range(max(min_batch_seqs, round(nominal_seqs * 0.8)), round(nominal_seqs * 1.25) + 1):
        if batch_seqs % batch_multiple:
            continue
        for steps in range(max(min_steps, nominal_steps - step_span), nominal_steps + step_span + 1):
            achieved = steps * batch_seqs * seq_len * flops_per_token
            key = (abs(achieved / budget_flops - 1), abs(math.log(batch_seqs / nominal_seqs)))
            if best is None or key < best[0]:
                best = (key, steps, batch_seqs)
    (error, _), steps, batch_seqs = best
    if error > tolerance:
        raise BudgetError(
            f"budget.flops: cannot land within {tolerance:.1%} of {budget_flops:.4g} FLOPs "
            f"(best {error:.2%} with {steps} steps of {batch_seqs} sequences)")
    batch_tokens = batch_seqs * seq_len
    tokens = steps * batch_tokens
    return BudgetPlan(budget_flops=float(budget_flops), convention=convention,
                      flops_per_token=flops_per_token, tokens=tokens, steps=steps,
                      batch_seqs=batch_seqs, batch_tokens=batch_tokens,
                      achieved_flops=tokens * flops_per_token)
