"""WSD sweeps (`sweep.schedule=wsd`): one warmup-stable trunk per model size, and a cooldown branch
per (C, N) point that starts from the trunk's checkpoint and ends exactly at the budget's tokens.

The layout (pure planning, no torch):

- **Sizes on a lattice.** Each budget's sizes are `sizes_per_budget` consecutive points of one
  log-lattice N_ref·r^m (r = the grid's size ratio, N_ref = the smallest budget's predicted
  optimum), the window whose centre lies nearest that budget's predicted optimum (within half a
  step). Budgets then share sizes: in the demo (budgets 2x apart, r = √2) the lattice is exactly
  the classic grid; with budgets √2 apart, consecutive budgets share four or five of their sizes.
- **One batch and LR per size.** The batch and LR rules are evaluated at the size's largest
  budget C_max (what a cosine run of that size at C_max would get); every branch of the size uses
  that batch (in sequences, exactly) and that peak LR, and the trunk's warmup (the rule's warmup
  for C_max's steps). The batch is the one near the rule's value for which every budget's tokens
  C/(FLOPs per token) are a whole number of steps within `budget.tolerance`.
- **Trunk and branches.** A budget of S steps cools down over its last round(f·S) steps
  (f = `optim.cooldown_fraction`), from its branch step b = S - round(f·S). The trunk trains at
  the peak LR to the largest budget's branch step and keeps a checkpoint at every branch step;
  each branch loads the trunk's checkpoint at its b and trains steps b..S-1 with the cooldown. A
  branch equals, bit for bit, the same WSD run trained from scratch, and has its run id. A size
  that only one budget uses is that run, trained from scratch, without a trunk.
- **Compute.** Trunk b_max + Σ (S_i - b_i) steps per size, against Σ S_i for a cosine run per
  point: about 0.8·C_max + 0.2·ΣC_i against ΣC_i.
"""
from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import open_dict

from sweeps.estimate import format_seconds
from sweeps.grid import (GridError, GridPoint, budgets_of, grid_ratio, outside_bounds, predicted_optimum,
                         size_targets)
from train.plan import RunPlan, make_plan
from train.plan.hparams import peak_lr, target_batch_tokens, warmup_steps
from train.plan.schedule import branch_step, check_schedule, steps_for_batch

SWEEP_SCHEDULES = ("cosine", "wsd")
TRUNKS = "trunks"  # trunk run directories: <sweep dir>/trunks/<label>, beside runs/ (not in results.csv)


def is_wsd(cfg) -> bool:
    name = cfg.sweep.get("schedule", "cosine") or "cosine"
    if name not in SWEEP_SCHEDULES:
        raise GridError(f"sweep.schedule: unknown schedule {name!r}; choose one of {', '.join(SWEEP_SCHEDULES)}")
    return name == "wsd"


@dataclass(frozen=True)
class Trunk:
    """The warmup-stable stretch of one size, trained once for all its budgets."""
    target_params: float
    budget: float                 # the size's largest budget: the trunk is that run up to its cooldown
    plan: RunPlan
    extra: tuple[str, ...] = ()
    branches: tuple[tuple[float, int], ...] = field(default=())  # (budget, branch step)

    @property
    def label(self) -> str:
        return f"trunk-N{self.plan.params.total:.3g}-{self.plan.run_id}".replace("+", "")

    def run_dir(self, sweep_dir: Path) -> Path:
        return Path(sweep_dir) / TRUNKS / self.label

    def overrides(self, sweep_dir: Path) -> list[str]:
        return [f"model.params={self.target_params:.6g}", f"budget.flops={self.budget:.6g}",
                f"out_dir={self.run_dir(sweep_dir)}", *self.extra]

    @property
    def steps(self) -> int:
        return self.plan.end_step

    def flops(self) -> float:
        return self.steps * self.plan.budget.batch_tokens * self.plan.budget.flops_per_token


@dataclass
class WsdLayout:
    points: list[GridPoint]       # every (C, N) point: a branch, or a single-budget run from scratch
    trunks: list[Trunk]
    trunk_of: dict[str, Trunk]    # point run id -> its trunk (absent: trained from scratch)

    def trained_flops(self, point: GridPoint) -> float:
        """What a point costs beyond its trunk: its cooldown, or its whole run without a trunk."""
        plan = point.plan
        steps = plan.schedule.cooldown_steps if point.plan.run_id in self.trunk_of else plan.budget.steps
        return steps * plan.budget.batch_tokens * plan.budget.flops_per_token

    def compute(self) -> tuple[float, float]:
        """(FLOPs this layout trains, FLOPs of one cosine run per point), in the budget convention."""
        total = sum(t.flops() for t in self.trunks) + sum(self.trained_flops(p) for p in self.points)
        cosine = sum(p.plan.budget.achieved_flops for p in self.points)
        return total, cosine


def lattice_targets(budgets: list[float], sweep) -> dict[float, list[float]]:
    """Each budget's size targets: the window of the lattice N_ref·r^m nearest its predicted optimum."""
    ratio, count = grid_ratio(sweep), sweep.sizes_per_budget
    anchor = predicted_optimum(budgets[0], sweep)
    out = {}
    for budget in budgets:
        size_targets(predicted_optimum(budget, sweep), sweep)  # the classic checks of count and span
        x = math.log(predicted_optimum(budget, sweep) / anchor) / math.log(ratio)
        first = math.floor(x - (count - 1) / 2 + 0.5 + 1e-6)
        out[budget] = [anchor * ratio ** m for m in range(first, first + count)]
    return out


def _point_cfg(cfg, budget: float, target: float, settings: dict):
    point_cfg = copy.deepcopy(cfg)
    with open_dict(point_cfg):
        point_cfg.model.params = target
        point_cfg.budget.flops = budget
        for key, value in settings.items():
            section, name = key.split(".")
            point_cfg[section][name] = value
    return point_cfg


def _plan(cfg, budget: float, target: float, settings: dict) -> RunPlan:
    try:
        return make_plan(_point_cfg(cfg, budget, target, settings))
    except ValueError as error:
        raise GridError(f"sweep.budgets: budget {budget:.3g} with N≈{target:.3g}: {error}") from error


def _overrides(settings: dict) -> tuple[str, ...]:
    return tuple(f"{key}={value!r}" if isinstance(value, float) else f"{key}={value}"
                 for key, value in settings.items())


def shared_batch(cfg, plan: RunPlan, budgets: list[float]) -> int:
    """The size's batch in sequences: near the batch rule at its largest budget, with every budget's
    tokens a whole number of steps within budget.tolerance (and at least budget.min_steps)."""
    opt, seq = cfg.optim, plan.shape.seq_len
    per_token = plan.budget.flops_per_token
    multiple = opt.batch_multiple
    wanted = target_batch_tokens(opt.batch_rule, budgets[-1], opt.batch_tokens) / seq
    nominal = max(multiple, round(wanted / multiple) * multiple)
    shortest = budgets[0] / per_token
    if shortest / (nominal * seq) < cfg.budget.min_steps:  # shrink, as the single-run planner does
        nominal = max(multiple, int(shortest / (cfg.budget.min_steps * seq)) // multiple * multiple)
    best = None
    for batch in range(max(multiple, round(nominal * 0.8)), round(nominal * 1.25) + 1):
        if batch % multiple:
            continue
        fits = [steps_for_batch(c, per_token, seq, batch) for c in budgets]
        if min(steps for steps, _ in fits) < cfg.budget.min_steps:
            continue
        key = (max(error for _, error in fits), abs(math.log(batch / nominal)))
        if best is None or key < best[0]:
            best = (key, batch)
    where = f"N={plan.params.total:.3g} at budgets {', '.join(f'{c:.3g}' for c in budgets)}"
    if best is None:
        raise GridError(f"budget.min_steps: {where}: no shared batch gives every budget {cfg.budget.min_steps} steps")
    if best[0][0] > cfg.budget.tolerance:
        raise GridError(f"budget.tolerance: {where}: no batch near {nominal} sequences makes every budget a whole "
                        f"number of steps within {cfg.budget.tolerance:.1%} (best {best[0][0]:.2%}); raise "
                        "budget.tolerance or use sweep.schedule=cosine")
    return best[1]


def plan_wsd(cfg) -> WsdLayout:
    """Every point of a WSD sweep, its trunk, and the settings each job gets. Errors before any training."""
    sweep = cfg.sweep
    if cfg.model.get("name") is not None or cfg.model.get("d_model") is not None:
        raise GridError("model: a sweep chooses sizes with the shape rule; drop model=<name> / model.d_model")
    try:
        with open_dict(cfg):
            probe = copy.deepcopy(cfg.optim)
            probe.schedule = "wsd"
        check_schedule(probe)
    except ValueError as error:
        raise GridError(str(error)) from error
    budgets = budgets_of(sweep)
    # the classic plan of every kept point, for its shape: points of one shape form a size
    sizes: dict[str, list[tuple[float, float, RunPlan]]] = {}
    for budget, targets in lattice_targets(budgets, sweep).items():
        for target in targets:
            if outside_bounds(target, sweep) is None:
                plan = _plan(cfg, budget, target, {})
                sizes.setdefault(json.dumps(plan.shape.to_dict(), sort_keys=True), []).append((budget, target, plan))
    if not sizes:
        raise GridError("sweep.min_params/max_params: every size of every budget was filtered out")
    opt, fraction = cfg.optim, cfg.optim.cooldown_fraction
    points, trunks, trunk_of = [], [], {}
    for members in sizes.values():
        members.sort(key=lambda m: m[0])
        size_budgets = [m[0] for m in members]
        if len(set(size_budgets)) != len(size_budgets):
            raise GridError("sweep: two sizes of one budget resolve to the same shape; widen sweep.span")
        first_plan = members[-1][2]
        batch = shared_batch(cfg, first_plan, size_budgets)
        lr = peak_lr(opt.lr_rule, size_budgets[-1], first_plan.params.total, opt.lr_constant,
                     dict(opt.lr_table or {}), opt.lr)
        per_token, seq = first_plan.budget.flops_per_token, first_plan.shape.seq_len
        longest = steps_for_batch(size_budgets[-1], per_token, seq, batch)[0]
        settings = {"optim.schedule": "wsd", "optim.lr": float(lr), "wsd.batch_seqs": batch,
                    "wsd.warmup_steps": warmup_steps(longest, opt.warmup_fraction, opt.warmup_max_steps)}
        trunk = None
        if len(members) > 1:
            steps = [branch_step(steps_for_batch(c, per_token, seq, batch)[0], fraction) for c in size_budgets]
            trunk_settings = settings | {"wsd.branch_steps": "[" + ",".join(map(str, steps)) + "]"}
            trunk_cfg_settings = settings | {"wsd.branch_steps": steps}
            budget, target = members[-1][0], members[-1][1]
            trunk = Trunk(target_params=target, budget=budget, plan=_plan(cfg, budget, target, trunk_cfg_settings),
                          extra=_overrides(trunk_settings), branches=tuple(zip(size_budgets, steps)))
            trunks.append(trunk)
        for budget, target, _ in members:
            point_settings = dict(settings)
            if trunk is not None:
                point_settings["wsd.trunk_dir"] = "{sweep_dir}/" + f"{TRUNKS}/{trunk.label}"
            point = GridPoint(budget=budget, target_params=target,
                              plan=_plan(cfg, budget, target, {k: v for k, v in point_settings.items()
                                                               if k != "wsd.trunk_dir"}),
                              extra=_overrides(point_settings))
            points.append(point)
            if trunk is not None:
                trunk_of[point.plan.run_id] = trunk
    points.sort(key=lambda p: (p.budget, p.plan.params.total))
    ids = [p.plan.run_id for p in points]
    if len(set(ids)) != len(ids):
        raise GridError("sweep: two grid points resolve to the same run (sizes too close); widen sweep.span")
    trunks.sort(key=lambda t: t.plan.params.total)
    return WsdLayout(points=points, trunks=trunks, trunk_of=trunk_of)


def standalone_point(cfg, budget: float, target: float, refine: bool = False) -> GridPoint:
    """A point outside the trunks (a refinement size): the WSD run from scratch, with the rules at its budget."""
    settings = {"optim.schedule": "wsd"}
    return GridPoint(budget=budget, target_params=target, plan=_plan(cfg, budget, target, settings),
                     refine=refine, extra=_overrides(settings))


def adjust_rows(rows: list[dict], layout: WsdLayout, throughput) -> None:
    """Branch rows estimate their cooldown only; their trunk's share is in the trunk table."""
    by_id = {p.plan.run_id: p for p in layout.points}
    for row in rows:
        point = by_id.get(row["run_id"])
        if point is not None and point.plan.run_id in layout.trunk_of:
            row["est_s"] = throughput.for_plan(point.plan, point.plan.schedule.cooldown_steps
                                               * point.plan.budget.batch_tokens)


def trunk_table(layout: WsdLayout, throughput, states: dict[str, str]) -> str:
    header = (f"{'trunk N':>9} {'shape':>8} {'batch':>7} {'lr':>8} {'warmup':>6} {'steps':>6} {'tokens':>10} "
              f"{'est.':>7}  {'state':<9} branches (C@step)")
    lines = ["trunks (one per size at more than one budget; warmup and constant LR, checkpoints at the branch steps):",
             header, "-" * len(header)]
    total = 0.0
    for trunk in layout.trunks:
        plan = trunk.plan
        tokens = trunk.steps * plan.budget.batch_tokens
        est = throughput.for_plan(plan, tokens)
        total += est
        branches = " ".join(f"{c:.3g}@{s}" for c, s in trunk.branches)
        shape = f"{plan.shape.n_layer}x{plan.shape.d_model}"
        lines.append(f"{plan.params.total:>9.3g} {shape:>8} "
                     f"{plan.budget.batch_tokens:>7} {plan.lr:>8.2e} {plan.warmup_steps:>6} {trunk.steps:>6} "
                     f"{tokens:>10.3g} {format_seconds(est):>7}  {states.get(plan.run_id, 'new'):<9} {branches}")
    lines.append("-" * len(header))
    scratch = len(layout.points) - len(layout.trunk_of)
    lines.append(f"{len(layout.trunks)} trunks ({format_seconds(total)}), {len(layout.trunk_of)} branches from them"
                 + (f", {scratch} run{'s' if scratch > 1 else ''} from scratch (sizes at one budget)" if scratch else "")
                 + "; the table above estimates each branch's cooldown only")
    return "\n".join(lines)


def compute_line(total: float, cosine: float) -> str:
    return f"compute: {total:.3g} FLOPs ({100 * total / cosine:.1f}% of one cosine run per point)"
