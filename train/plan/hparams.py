"""Peak learning rate and global batch size by rule (no torch).

Rules:
- `deepseek`: DeepSeek LLM (Bi et al. 2024, Sec. 3.1) fitted on IsoFLOP-style runs:
  η_opt = 0.3118·C^-0.1250 and B_opt = 0.2920·C^0.3271 tokens, C in FLOPs.
- `constant`: the configured value for every run.
- `table`: a per-size table, log-interpolated in total parameters (clamped at the ends).
"""
from __future__ import annotations

import bisect
import math

from train.plan.errors import HparamError

LR_RULES = ("deepseek", "constant", "table")
BATCH_RULES = ("deepseek", "constant")




def deepseek_lr(budget_flops: float) -> float:
    return 0.3118 * budget_flops ** -0.1250


def deepseek_batch_tokens(budget_flops: float) -> float:
    return 0.2920 * budget_flops ** 0.3271


def _log_interpolate(x: float, xs: list[float], ys: list[float]) -> float:
    if x <= xs[0]:
        return ys[0]
    if x >= xs[-1]:
        return ys[-1]
    i = bisect.bisect_right(xs, x)
    t = (math.log(x) - math.log(xs[i - 1])) / (math.log(xs[i]) - math.log(xs[i - 1]))
    return math.exp(math.log(ys[i - 1]) + t * (math.log(ys[i]) - math.log(ys[i - 1])))


def peak_lr(rule: str, budget_flops: float, params: int, constant: float,
            table: dict | None = None, override: float | None = None) -> float:
    if override is not None:
        if not (math.isfinite(override) and override > 0):
            raise HparamError(f"optim.lr: must be a positive finite number, got {override}")
        return float(override)
    if rule == "deepseek":
        return deepseek_lr(budget_flops)
    if rule == "constant":
        return float(constant)
    if rule == "table":
        if not table:
            raise HparamError("optim.lr_table: lr_rule=table needs a non-empty {params: lr} table")
        try:
            pairs = sorted((float(size), float(lr)) for size, lr in table.items())
        except (TypeError, ValueError):
            raise HparamError(f"optim.lr_table: keys and values must be numbers ({{total params: peak lr}}), "
                              f"got {dict(table)}") from None
        if not all(math.isfinite(p) and p > 0 and math.isfinite(lr) and lr > 0 for p, lr in pairs):
            raise HparamError(f"optim.lr_table: sizes and learning rates must be positive finite numbers, "
                              f"got {dict(table)}")
        return _log_interpolate(params, [p for p, _ in pairs], [lr for _, lr in pairs])
    raise HparamError(f"optim.lr_rule: unknown rule {rule!r}; choose one of {', '.join(LR_RULES)}")


def target_batch_tokens(rule: str, budget_flops: float, constant: int | None) -> float:
    if constant is not None:
        if constant <= 0:
            raise HparamError(f"optim.batch_tokens: must be positive, got {constant}")
        return float(constant)
    if rule == "deepseek":
        return deepseek_batch_tokens(budget_flops)
    if rule == "constant":
        raise HparamError("optim.batch_tokens: batch_rule=constant needs optim.batch_tokens")
    raise HparamError(f"optim.batch_rule: unknown rule {rule!r}; choose one of {', '.join(BATCH_RULES)}")


def check_schedule(opt) -> None:
    """The LR schedule's fractions, each checked by name (a warmup longer than the run, or a final
    LR below zero, would otherwise train silently on a schedule nobody asked for)."""
    if not 0 <= opt.warmup_fraction < 1:  # also false for NaN
        raise HparamError(f"optim.warmup_fraction: must lie in [0, 1) (a share of the run's steps), got "
                          f"{opt.warmup_fraction}; the default is 0.05")
    if opt.warmup_max_steps < 1:
        raise HparamError(f"optim.warmup_max_steps: must be at least 1 step, got {opt.warmup_max_steps}")
    if not 0 <= opt.final_lr_fraction <= 1:
        raise HparamError(f"optim.final_lr_fraction: must lie in [0, 1] (the last step's LR over the peak), got "
                          f"{opt.final_lr_fraction}; Chinchilla's is 0.1")


def warmup_steps(total_steps: int, fraction: float, max_steps: int) -> int:
    """Linear warmup length: a fixed fraction of the run, capped, so short runs stay mostly decay."""
    return max(1, min(max_steps, round(fraction * total_steps)))
