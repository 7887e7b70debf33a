"""Nominal compute budgets: taken from the `budget` column, or found by snapping FLOPs.

Rows without a budget are grouped by their FLOPs: sorted, a new group starts where a run's FLOPs
exceed the previous run's by more than SNAP_TOLERANCE. Each group is named by the coarsest
rounding of its geometric mean, to 1, 2 or 3 significant figures, that stays within 1% of it:
runs at 0.997e19 make 1e19, Porian et al.'s 2.56e19 and 1.25e16 stay themselves. A group whose
runs spread further than SNAP_TOLERANCE from that value is an error: give those rows a budget.
"""

from __future__ import annotations

import numpy as np

from .errors import AnalysisError
from .table import Points

SNAP_TOLERANCE = 0.10  # step rounding moves a run's FLOPs by a few % at most


def _nominal(x: float) -> float:
    for sig in (1, 2, 3):
        r = float(f"{x:.{sig - 1}e}")
        if abs(r / x - 1) <= 0.01:
            return r
    return r


def assign_budgets(pts: Points) -> tuple[np.ndarray, list[str]]:
    budget = pts.budget.copy()
    todo = np.flatnonzero(~np.isfinite(budget))
    if len(todo) == 0:
        return budget, []
    # 1. rows near a budget that other rows name
    known = np.unique(budget[np.isfinite(budget)])
    if len(known):
        for i in todo:
            j = np.argmin(np.abs(np.log(known / pts.flops[i])))
            if abs(pts.flops[i] / known[j] - 1) <= SNAP_TOLERANCE:
                budget[i] = known[j]
    todo = np.flatnonzero(~np.isfinite(budget))
    # 2. group the rest by FLOPs
    order = todo[np.argsort(pts.flops[todo])]
    groups, cur = [], [order[0]] if len(order) else []
    for prev, i in zip(order[:-1], order[1:]):
        if pts.flops[i] > pts.flops[prev] * (1 + SNAP_TOLERANCE):
            groups.append(cur)
            cur = []
        cur.append(i)
    if cur:
        groups.append(cur)
    worst = 0.0
    for g in groups:
        nominal = _nominal(float(np.exp(np.log(pts.flops[g]).mean())))
        dev = np.abs(pts.flops[g] / nominal - 1)
        if dev.max() > SNAP_TOLERANCE:
            rows = ", ".join(pts.label(i) for i in g[:8])
            raise AnalysisError(
                f"cannot snap FLOPs {pts.flops[g].min():.3g}-{pts.flops[g].max():.3g} to one budget "
                f"(they spread more than {SNAP_TOLERANCE:.0%} around {nominal:.3g}); add a `budget` column. Rows: {rows}"
            )
        worst = max(worst, float(dev.max()))
        budget[g] = nominal
    n_missing = int((~np.isfinite(pts.budget)).sum())
    note = (
        f"{n_missing} row(s) had no budget: snapped by FLOPs ({n_missing - len(todo)} to budgets named by other rows, "
        f"{len(todo)} to {len(groups)} new nominal budget(s) {', '.join(f'{budget[g[0]]:.3g}' for g in groups)}; "
        f"largest deviation {worst:.1%}, tolerance {SNAP_TOLERANCE:.0%})"
    )
    return budget, [note]
