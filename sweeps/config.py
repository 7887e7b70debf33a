"""The sweep config (the `sweep` group): which budgets, and which model sizes around each optimum."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional


@dataclass
class BudgetRange:
    start: Optional[float] = None      # first budget C, FLOPs
    stop: Optional[float] = None       # last budget C, FLOPs (inclusive)
    count: int = 0                     # budgets, log-spaced from start to stop


@dataclass
class SweepConfig:
    name: Optional[str] = None         # None: not a sweep (a single `python -m train` run)
    out_dir: Optional[str] = None      # sweep directory; default sweeps_out/<name>
    budgets: List[float] = field(default_factory=list)
    budget_range: BudgetRange = field(default_factory=BudgetRange)
    sizes_per_budget: int = 5          # model sizes N per budget
    span: float = 8.0                  # N_max / N_min within one budget
    # Where each budget's sizes are centred: the predicted optimum N_opt(C) = k_N · C^a.
    # Default prior: Chinchilla, a = 0.5 and D/N = tokens_per_param at the optimum, so
    # N_opt = sqrt(C / (6 · tokens_per_param)).
    tokens_per_param: float = 20.0
    prior_fit: Optional[str] = None    # a fit.json of an earlier sweep: centre on its N_opt(C) instead
    min_params: Optional[float] = None  # drop sizes below/above these bounds (e.g. the catalog range)
    max_params: Optional[float] = None
    effective_tflops: Optional[float] = None  # training throughput for time estimates; None = table
    # Refinement (`python -m sweeps refine <sweep dir>`, or this flag): after the grid, every budget
    # whose best loss lies at its smallest or largest size gets `refine_sizes` more sizes beyond
    # that edge, at the grid's own spacing, and they are trained into the same sweep directory.
    refine: bool = False
    refine_sizes: int = 2
