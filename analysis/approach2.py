"""Approach 2: per-budget IsoFLOP minima, then N_opt = k_N·C^a and D_opt = k_D·C^b.

For each budget: the parabola minimum gives N_opt and loss_opt (minima.py). C at the optimum is
the budget's FLOPs under the chosen convention, read at N_opt from a log-log line through the
window's points (exactly the budget when every run used it); D_opt = C / (FLOPs per token at
N_opt), the FLOPs per token again read off a log-log line (exactly 6·N_opt under 6N).

Intervals (95%, percentile bootstrap): each replicate resamples the points of every budget with
replacement, refits every minimum (window chosen afresh) and refits both lines. A replicate's
budget is left out of that replicate's line when its parabola has no vertex inside the sampled
sizes. Edge budgets are left out of the lines unless `include_edge`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .errors import AnalysisError
from .minima import MIN_WINDOW_POINTS, Window, fit_parabolas
from .powerlaw import PowerLaw, fit_power_law, masked_line, percentile_ci
from .table import Points

A_PLUS_B_TOLERANCE = 0.02  # under 6ND, D = C/6N makes a + b = 1 up to step rounding


@dataclass
class BudgetMinimum:
    budget: float
    C: float  # FLOPs at the optimum, under the convention
    N_opt: float
    D_opt: float
    loss_opt: float
    curvature: float  # d²L/d(ln N)² of the parabola
    n_points: int
    n_window: int
    edge: bool
    has_minimum: bool
    used: bool = False
    N: np.ndarray = field(repr=False, default=None)  # the budget's points, sorted by N
    loss: np.ndarray = field(repr=False, default=None)
    in_window: np.ndarray = field(repr=False, default=None)
    boot_N: np.ndarray = field(repr=False, default=None)
    boot_D: np.ndarray = field(repr=False, default=None)
    boot_C: np.ndarray = field(repr=False, default=None)
    boot_ok: np.ndarray = field(repr=False, default=None)

    @property
    def N_opt_ci(self):
        return None if self.boot_N is None else percentile_ci(self.boot_N[self.boot_ok])

    @property
    def D_opt_ci(self):
        return None if self.boot_D is None else percentile_ci(self.boot_D[self.boot_ok])

    def parabola(self, N):
        """The fitted parabola's loss at N (array)."""
        return self.loss_opt + 0.5 * self.curvature * (np.log(N) - np.log(self.N_opt)) ** 2


@dataclass
class Approach2:
    budgets: list[BudgetMinimum]
    N_law: PowerLaw
    D_law: PowerLaw
    window: Window
    n_boot: int
    warnings: list[str]

    @property
    def used(self):
        return [m for m in self.budgets if m.used]


def _group_sizes_check(pts: Points, budget: np.ndarray, drop_small: bool, warnings: list[str]):
    groups, small = [], []
    for b in np.unique(budget):
        idx = np.flatnonzero(budget == b)
        idx = idx[np.argsort(pts.params[idx], kind="stable")]
        k = len(np.unique(pts.params[idx]))
        (groups if k >= MIN_WINDOW_POINTS else small).append((b, idx, k))
    if small:
        text = "; ".join(
            f"budget {b:.3g}: {k} size(s) [{', '.join(pts.label(i) for i in idx[:4])}]" for b, idx, k in small
        )
        if not drop_small:
            raise AnalysisError(
                f"{len(small)} budget(s) with fewer than {MIN_WINDOW_POINTS} model sizes, too few for a parabola: {text}. "
                "Add runs, or pass --drop-invalid to leave these budgets out."
            )
        warnings.append(f"DROPPED {len(small)} budget(s) with fewer than {MIN_WINDOW_POINTS} sizes (--drop-invalid): {text}")
    return groups


def _budget_minimum(pts, b, idx, window, n_boot, rng) -> BudgetMinimum:
    N, y = pts.params[idx], pts.loss[idx]
    x = np.log(N)
    fit = fit_parabolas(x, y, np.ones((1, len(x))), window)
    win = fit.in_window[0]
    # log-log lines through the window for C(N) and FLOPs per token(N)
    sC, iC = masked_line(x, np.log(pts.flops[idx]), win)
    sF, iF = masked_line(x, np.log(pts.flops[idx] / pts.tokens[idx]), win)

    def C_D(xo):
        C = np.exp(iC + sC * xo)
        return C, C / np.exp(iF + sF * xo)

    xo = fit.x_opt[0]
    C, D = C_D(xo)
    m = BudgetMinimum(
        budget=float(b),
        C=float(C[0]),
        N_opt=float(np.exp(xo)),
        D_opt=float(D[0]),
        loss_opt=float(fit.loss_opt[0]),
        curvature=float(fit.curvature[0]),
        n_points=len(idx),
        n_window=int(win.sum()),
        edge=bool(fit.edge[0]),
        has_minimum=bool(fit.ok[0]),
        N=N,
        loss=y,
        in_window=win,
    )
    if n_boot > 0:
        W = rng.multinomial(len(x), np.full(len(x), 1.0 / len(x)), size=n_boot)
        bf = fit_parabolas(x, y, W, window)
        bC, bD = C_D(bf.x_opt)
        m.boot_N, m.boot_C, m.boot_D, m.boot_ok = np.exp(bf.x_opt), bC, bD, bf.inside
    return m


def fit_approach2(
    pts: Points,
    budget: np.ndarray,
    window: Window,
    n_boot: int = 1000,
    seed: int = 0,
    include_edge: bool = False,
    drop_small: bool = False,
    convention: str = "6N",
    warnings: list | None = None,
) -> Approach2:
    """`warnings`, when given, receives this step's warnings as they arise (and is the list kept)."""
    warnings = [] if warnings is None else warnings
    rng = np.random.default_rng(seed)
    groups = _group_sizes_check(pts, budget, drop_small, warnings)
    if not groups:
        raise AnalysisError("no budget has enough model sizes for an IsoFLOP parabola")
    minima = [_budget_minimum(pts, b, idx, window, n_boot, rng) for b, idx, _ in groups]

    for m in minima:
        m.used = m.has_minimum and (include_edge or not m.edge)
    flagged = [m for m in minima if not m.used]
    if flagged:
        text = ", ".join(
            f"{m.budget:.3g} ({'no minimum: parabola opens downwards' if not m.has_minimum else 'minimum at the edge of N ' + f'{m.N.min():.3g}-{m.N.max():.3g}'})"
            for m in flagged
        )
        if len(flagged) == len(minima):
            raise AnalysisError(
                f"every budget is flagged, so there is no exponent to fit: {text}. "
                "Extend the model sizes so each budget's minimum lies inside the grid."
            )
        warnings.append(f"left out of the exponent fit: {len(flagged)} budget(s): {text}")
    used = [m for m in minima if m.used]
    if len(used) < 2:
        raise AnalysisError(
            f"only {len(used)} budget has a bracketed minimum ({used[0].budget:.3g}); an exponent needs at least 2"
        )
    if len(used) < 4:
        warnings.append(f"exponents rest on only {len(used)} budgets; treat their intervals with care")
    if window.all_points:
        warnings.append("parabolas fitted to ALL points of each budget (--all-points); this biases a on real data")

    C = np.array([m.C for m in used])
    boot = dict(boot_C=None, boot_Y=None, boot_ok=None)
    if n_boot > 0:
        bC = np.stack([m.boot_C for m in used], 1)
        ok = np.stack([m.boot_ok for m in used], 1)
        bad = 1 - ok.mean()
        if bad > 0.05:
            warnings.append(f"{bad:.0%} of bootstrap minima had no vertex inside the sampled sizes and were left out")
        N_law = fit_power_law(C, [m.N_opt for m in used], bC, np.stack([m.boot_N for m in used], 1), ok)
        D_law = fit_power_law(C, [m.D_opt for m in used], bC, np.stack([m.boot_D for m in used], 1), ok)
    else:
        N_law = fit_power_law(C, np.array([m.N_opt for m in used]), **boot)
        D_law = fit_power_law(C, np.array([m.D_opt for m in used]), **boot)
    s = N_law.exponent + D_law.exponent
    if convention in ("6N", "6N_nonembed") and abs(s - 1) > A_PLUS_B_TOLERANCE:
        warnings.append(f"a + b = {s:.3f}, far from 1 under {convention} (C = 6ND): check the FLOPs or tokens")
    return Approach2(minima, N_law, D_law, window, n_boot, warnings)
