"""The IsoFLOP grid (pure): budgets, model sizes around each predicted optimum, one run spec each."""
from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf, open_dict

from train.plan import RunPlan, make_plan

# Consecutive sizes closer than this are indistinguishable after the shape rule's 10% slack.
MIN_SIZE_RATIO = 1.3


class GridError(ValueError):
    """A sweep config that cannot make a grid. The message names the field."""


@dataclass(frozen=True)
class GridPoint:
    budget: float
    target_params: float
    plan: RunPlan
    refine: bool = False  # added by refinement beyond an edge minimum, not part of the grid
    extra: tuple[str, ...] = ()  # more overrides (a WSD sweep's schedule settings); {sweep_dir} is filled in

    @property
    def label(self) -> str:
        """Run directory name: readable, and unique through the run id."""
        return f"C{self.budget:.3g}-N{self.plan.params.total:.3g}-{self.plan.run_id}".replace("+", "")

    def overrides(self, sweep_dir: Path) -> list[str]:
        return [f"model.params={self.target_params:.6g}", f"budget.flops={self.budget:.6g}",
                f"out_dir={sweep_dir / 'runs' / self.label}"] + [e.replace("{sweep_dir}", str(sweep_dir))
                                                                  for e in self.extra]


def budgets_of(sweep) -> list[float]:
    listed = [float(c) for c in sweep.budgets]
    ranged = sweep.budget_range
    has_range = any(v not in (None, 0) for v in (ranged.start, ranged.stop, ranged.count))
    if listed and has_range:
        raise GridError("sweep.budgets: give either a list of budgets or sweep.budget_range, not both")
    if has_range:
        if ranged.start is None or ranged.stop is None or ranged.count < 1:
            raise GridError("sweep.budget_range: needs start, stop and count >= 1")
        if not (0 < ranged.start <= ranged.stop):
            raise GridError(f"sweep.budget_range: need 0 < start <= stop, got {ranged.start} .. {ranged.stop}")
        if ranged.count == 1:
            if ranged.stop != ranged.start:
                raise GridError(f"sweep.budget_range: count=1 gives one budget, but start ({ranged.start:g}) and "
                                f"stop ({ranged.stop:g}) differ; set stop equal to start, or count to 2 or more")
            listed = [float(ranged.start)]
        else:
            ratio = (ranged.stop / ranged.start) ** (1 / (ranged.count - 1))
            listed = [float(f"{ranged.start * ratio ** i:.4g}") for i in range(ranged.count)]
    if not listed:
        raise GridError("sweep.budgets: the budget list is empty (set sweep.budgets or sweep.budget_range)")
    for c in listed:
        if not (math.isfinite(c) and c > 0):
            raise GridError(f"sweep.budgets: every budget must be a positive finite number, got {c}")
    if len(set(listed)) != len(listed):
        raise GridError(f"sweep.budgets: duplicate budgets in {listed}")
    return sorted(listed)


def predicted_optimum(budget: float, sweep) -> float:
    """N_opt(C) from a previous fit when given, else the Chinchilla prior sqrt(C / (6·D/N))."""
    if sweep.prior_fit:
        path = Path(sweep.prior_fit)
        if not path.is_file():
            raise GridError(f"sweep.prior_fit: no such file {path}")
        fit = json.loads(path.read_text())
        try:
            return float(fit["k_N"]) * budget ** float(fit["a"])
        except (KeyError, TypeError, ValueError) as error:
            raise GridError(f"sweep.prior_fit: {path} has no usable k_N and a ({error})") from error
    if sweep.tokens_per_param <= 0:
        raise GridError(f"sweep.tokens_per_param: must be positive, got {sweep.tokens_per_param}")
    return math.sqrt(budget / (6 * sweep.tokens_per_param))


def size_targets(center: float, sweep) -> list[float]:
    """`sizes_per_budget` sizes log-spaced over `span`, centred (in log) on the predicted optimum."""
    count, span = sweep.sizes_per_budget, sweep.span
    if count < 3:
        raise GridError(f"sweep.sizes_per_budget: need at least 3 sizes to bracket a minimum, got {count}")
    if not span > 1:
        raise GridError(f"sweep.span: must be > 1 (N_max / N_min), got {span}")
    if span ** (1 / (count - 1)) < MIN_SIZE_RATIO:
        raise GridError(f"sweep.span: {span} is too narrow for {count} sizes (neighbours would be less "
                        f"than {MIN_SIZE_RATIO}x apart); widen the span or use fewer sizes")
    return [center * span ** (i / (count - 1) - 0.5) for i in range(count)]


def grid_ratio(sweep) -> float:
    """The size ratio between neighbouring points of one budget."""
    return sweep.span ** (1 / (sweep.sizes_per_budget - 1))


def make_point(cfg, budget: float, target: float, refine: bool = False) -> GridPoint:
    """One (C, N) run: its full plan from the sweep's config with this budget and size target."""
    # a copy without the large `hydra` node, which planning never reads
    point_cfg = OmegaConf.masked_copy(cfg, [key for key in cfg if key != "hydra"]) if "hydra" in cfg else copy.deepcopy(cfg)
    OmegaConf.set_struct(point_cfg, OmegaConf.is_struct(cfg))
    with open_dict(point_cfg):
        point_cfg.model.params = target
        point_cfg.budget.flops = budget
    try:
        plan = make_plan(point_cfg)
    except ValueError as error:
        raise GridError(f"sweep.budgets: budget {budget:.3g} with N≈{target:.3g}: {error}") from error
    return GridPoint(budget=budget, target_params=target, plan=plan, refine=refine)


def outside_bounds(target: float, sweep) -> str | None:
    if sweep.min_params is not None and target < sweep.min_params:
        return f"below sweep.min_params={sweep.min_params:.3g}"
    if sweep.max_params is not None and target > sweep.max_params:
        return f"above sweep.max_params={sweep.max_params:.3g}"
    return None


def build_grid(cfg) -> list[GridPoint]:
    """Every (C, N) point of the sweep, each with its full run plan. Errors before any training."""
    sweep = cfg.sweep
    if cfg.model.get("name") is not None or cfg.model.get("d_model") is not None:
        raise GridError("model: a sweep chooses sizes with the shape rule; drop model=<name> / model.d_model")
    points = []
    for budget in budgets_of(sweep):
        for target in size_targets(predicted_optimum(budget, sweep), sweep):
            if outside_bounds(target, sweep) is None:
                points.append(make_point(cfg, budget, target))
    if not points:
        raise GridError("sweep.min_params/max_params: every size of every budget was filtered out")
    ids = [p.plan.run_id for p in points]
    if len(set(ids)) != len(ids):
        raise GridError("sweep: two grid points resolve to the same run (sizes too close); widen sweep.span")
    return points


def sweep_dir_of(cfg) -> Path:
    if cfg.sweep.out_dir:
        return Path(cfg.sweep.out_dir)
    if not cfg.sweep.name:
        raise GridError("sweep: no sweep selected; use sweep=<preset> (see configs/sweep/)")
    return Path("sweeps_out") / cfg.sweep.name


def config_for_plan_only(cfg):
    """A copy of cfg with interpolations resolved, for pure planning."""
    return OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
