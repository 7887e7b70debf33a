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


# The search looks at most this many batch sizes (the ones nearest the rule's batch), each with
# its best step count in closed form, so planning costs the same at any budget.
MAX_BATCH_CANDIDATES = 2048
# The batch may move this far from the rule's batch (as a ratio) to land on the budget.
BATCH_RANGE = (0.8, 1.25)


def plan_budget(budget_flops: float, flops_per_token: float, convention: str, seq_len: int,
                target_batch_tokens: float, min_steps: int = 20, tolerance: float = 0.01,
                batch_multiple: int = 1, preferred_multiple: int | None = None) -> BudgetPlan:
    """Choose steps and a global batch (in sequences) so that steps·batch·seq_len·FLOPs/token ≈ C.

    The batch stays near `target_batch_tokens` (from the batch-size rule); both it and the step
    count are adjusted by a few percent where needed to land within `tolerance` of C. The batch
    is a multiple of `batch_multiple` (the data-parallel world size, and any extra multiple asked
    for) so every rank gets equal work, and a multiple of `preferred_multiple` (e.g. 8 x the
    world size, so that micro-batches split it evenly) wherever that still lands within
    `tolerance`. Among the candidates the one closest to C wins, then the one closest to the
    rule's batch. Each candidate batch gets its best step count in closed form and at most
    MAX_BATCH_CANDIDATES batches are tried, so planning takes milliseconds at any budget.
    """
    if not (isinstance(budget_flops, (int, float)) and math.isfinite(budget_flops) and budget_flops > 0):
        raise BudgetError(f"budget.flops: must be a positive finite number, got {budget_flops!r}")
    if not (math.isfinite(tolerance) and 0 < tolerance < 1):
        raise BudgetError(f"budget.tolerance: must lie between 0 and 1 (a fraction of C), got {tolerance}")
    if min_steps < 1:
        raise BudgetError(f"budget.min_steps: must be at least 1, got {min_steps}")
    if batch_multiple < 1:
        raise BudgetError(f"optim.batch_multiple: must be at least 1, got {batch_multiple}")
    plan = _search(budget_flops, flops_per_token, convention, seq_len, target_batch_tokens,
                   min_steps, tolerance, batch_multiple)
    if preferred_multiple is not None and math.lcm(preferred_multiple, batch_multiple) > batch_multiple:
        try:
            preferred = _search(budget_flops, flops_per_token, convention, seq_len, target_batch_tokens,
                                min_steps, tolerance, math.lcm(preferred_multiple, batch_multiple))
        except BudgetError:
            return plan  # the budget does not allow it
        # only as a small move from the batch the rule gives (a batch of 3 does not become 8)
        if BATCH_RANGE[0] <= preferred.batch_seqs / plan.batch_seqs <= BATCH_RANGE[1]:
            return preferred
    return plan


def _search(budget_flops: float, flops_per_token: float, convention: str, seq_len: int,
            target_batch_tokens: float, min_steps: int, tolerance: float, batch_multiple: int) -> BudgetPlan:
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

    step_span = max(2, nominal_steps // 20)
    step_lo, step_hi = max(min_steps, nominal_steps - step_span), nominal_steps + step_span
    # Batches from 0.8x to 1.25x the nominal one, in multiples of batch_multiple; the
    # MAX_BATCH_CANDIDATES nearest the nominal batch when there are more.
    first = -(-max(min_batch_seqs, round(nominal_seqs * BATCH_RANGE[0])) // batch_multiple)
    last = round(nominal_seqs * BATCH_RANGE[1]) // batch_multiple
    if last - first + 1 > MAX_BATCH_CANDIDATES:
        centre = nominal_seqs // batch_multiple
        first = max(first, centre - MAX_BATCH_CANDIDATES // 2)
        last = min(last, first + MAX_BATCH_CANDIDATES - 1)
    best = None
    for batch_seqs in range(first * batch_multiple, last * batch_multiple + 1, batch_multiple):
        # |steps·batch·seq_len·FLOPs/token / C - 1| is smallest at the step count nearest
        # tokens_wanted / batch_tokens, or at an end of the allowed step range.
        exact = tokens_wanted / (batch_seqs * seq_len)
        below = min(step_hi, max(step_lo, math.floor(exact)))
        above = min(step_hi, max(step_lo, math.ceil(exact)))
        closeness = abs(math.log(batch_seqs / nominal_seqs))
        for steps in (below, above) if above != below else (below,):
            achieved = steps * batch_seqs * seq_len * flops_per_token
            key = (abs(achieved / budget_flops - 1), closeness)
            if best is None or key < best[0]:
                best = (key, steps, batch_seqs)
    if best is None:
        raise BudgetError(f"budget.flops: no batch of whole multiples of {batch_multiple} sequences "
                          f"near {nominal_seqs} sequences fits {budget_flops:.4g} FLOPs")
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
