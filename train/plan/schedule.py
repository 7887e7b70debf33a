"""The learning-rate schedule's plan (no torch): cosine, or warmup-stable-decay (WSD).

WSD (Hägele et al. 2024, arXiv 2405.18392): linear warmup, the peak LR held constant, then a
cooldown over the last `optim.cooldown_fraction` of the steps (default 0.2) of shape 1-sqrt, down
to the same final fraction of the peak as the cosine. Because the LR is constant until the
cooldown, every run of one size, batch and LR shares its steps up to its cooldown start: a WSD
sweep trains that stretch once (the trunk) and each budget's cooldown from the trunk's checkpoint
(a branch). Branch and trunk are planned here; the LR curve itself is train/run/optim.py.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from train.plan.budget import BudgetPlan
from train.plan.errors import BudgetError, ConfigError

SCHEDULES = ("cosine", "wsd")


@dataclass(frozen=True)
class SchedulePlan:
    name: str = "cosine"
    cooldown_steps: int = 0            # wsd: steps of the cooldown (the last ones of the run)
    branch_steps: tuple[int, ...] = ()  # a trunk: checkpoints kept at these steps; it stops at the last
    trunk_dir: str | None = None       # a branch: the trunk run directory it starts from

    @property
    def is_trunk(self) -> bool:
        return bool(self.branch_steps)

    def identity(self) -> dict:
        """What the run id adds for this schedule: nothing for cosine, so cosine ids stay as they were.
        A branch's id is that of the same run trained from scratch: both give the same result."""
        if self.name == "cosine":
            return {}
        out = {"schedule": self.name, "cooldown_steps": self.cooldown_steps}
        if self.branch_steps:
            out["trunk_branch_steps"] = list(self.branch_steps)
        return out

    def to_dict(self) -> dict:
        out = {"schedule": self.name}
        if self.name == "wsd":
            out["cooldown_steps"] = self.cooldown_steps
        if self.branch_steps:
            out["role"], out["branch_steps"] = "trunk", list(self.branch_steps)
        if self.trunk_dir:
            out["role"], out["trunk_dir"] = "branch", self.trunk_dir
        return out


def check_schedule(opt) -> str:
    name = opt.get("schedule", "cosine") or "cosine"
    if name not in SCHEDULES:
        raise ConfigError(f"optim.schedule: unknown schedule {name!r}; choose one of {', '.join(SCHEDULES)}")
    if name == "wsd":
        fraction = opt.get("cooldown_fraction", 0.2)
        if not (isinstance(fraction, (int, float)) and math.isfinite(fraction) and 0 < fraction < 1):
            raise ConfigError(f"optim.cooldown_fraction: must lie between 0 and 1 (a share of the run's steps), "
                              f"got {fraction}")
    return name


def cooldown_steps(total_steps: int, fraction: float) -> int:
    """The cooldown's length: `fraction` of the run's steps, at least 1."""
    return max(1, min(total_steps, round(fraction * total_steps)))


def branch_step(total_steps: int, fraction: float) -> int:
    """The step where the cooldown starts: optimizer steps before it run at the peak LR."""
    return total_steps - cooldown_steps(total_steps, fraction)


def steps_for_batch(budget_flops: float, flops_per_token: float, seq_len: int, batch_seqs: int) -> tuple[int, float]:
    """Whole steps of a fixed batch closest to the budget, and their relative FLOP error."""
    tokens_wanted = budget_flops / flops_per_token
    steps = max(1, round(tokens_wanted / (batch_seqs * seq_len)))
    return steps, abs(steps * batch_seqs * seq_len * flops_per_token / budget_flops - 1)


def plan_fixed_batch(budget_flops: float, flops_per_token: float, convention: str, seq_len: int,
                     batch_seqs: int, min_steps: int, tolerance: float, batch_multiple: int = 1) -> BudgetPlan:
    """The budget plan with an exact global batch (a WSD size's shared batch): only the steps vary."""
    if not (isinstance(batch_seqs, int) and batch_seqs > 0):
        raise BudgetError(f"wsd.batch_seqs: must be a positive number of sequences, got {batch_seqs!r}")
    if batch_seqs % batch_multiple:
        raise BudgetError(f"wsd.batch_seqs: {batch_seqs} is not a multiple of optim.batch_multiple={batch_multiple}")
    steps, error = steps_for_batch(budget_flops, flops_per_token, seq_len, batch_seqs)
    if steps < min_steps:
        raise BudgetError(f"budget.flops: {budget_flops:.4g} FLOPs affords only {steps} steps of "
                          f"{batch_seqs * seq_len} tokens; budget.min_steps is {min_steps}")
    if error > tolerance:
        raise BudgetError(f"budget.flops: cannot land within {tolerance:.1%} of {budget_flops:.4g} FLOPs with a "
                          f"batch of {batch_seqs} sequences (best {error:.2%} with {steps} steps)")
    tokens = steps * batch_seqs * seq_len
    return BudgetPlan(budget_flops=float(budget_flops), convention=convention, flops_per_token=flops_per_token,
                      tokens=tokens, steps=steps, batch_seqs=batch_seqs, batch_tokens=batch_seqs * seq_len,
                      achieved_flops=tokens * flops_per_token)


def plan_schedule(cfg, steps: int, warmup: int) -> SchedulePlan:
    """The schedule of a run of `steps` steps with `warmup` warmup steps, from cfg.optim and cfg.wsd."""
    name = check_schedule(cfg.optim)
    wsd = cfg.get("wsd") or {}
    branch_steps = tuple(sorted({int(s) for s in (wsd.get("branch_steps") or [])}))
    trunk_dir = wsd.get("trunk_dir")
    if name != "wsd":
        if branch_steps or trunk_dir:
            raise ConfigError("wsd: trunks and branches need optim.schedule=wsd")
        return SchedulePlan()
    cooldown = cooldown_steps(steps, cfg.optim.cooldown_fraction)
    start = steps - cooldown
    if start < warmup:
        raise ConfigError(f"optim.cooldown_fraction: the cooldown of {cooldown} steps would start at step {start}, "
                          f"before the warmup of {warmup} steps ends; lower optim.cooldown_fraction or the warmup")
    if branch_steps and trunk_dir:
        raise ConfigError("wsd: a run is either a trunk (wsd.branch_steps) or a branch (wsd.trunk_dir), not both")
    if branch_steps and not (warmup <= branch_steps[0] and branch_steps[-1] <= start):
        raise ConfigError(f"wsd.branch_steps: every branch step must lie between the warmup ({warmup}) and the "
                          f"cooldown start ({start}) of the trunk's schedule, got {list(branch_steps)}")
    return SchedulePlan(name="wsd", cooldown_steps=cooldown, branch_steps=branch_steps,
                        trunk_dir=str(trunk_dir) if trunk_dir else None)
