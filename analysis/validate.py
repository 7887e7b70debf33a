"""Row checks before any fitting: status, finite positive values, FLOPs consistent with N·D.

An invalid row is an error that names it; `--drop-invalid` drops such rows with a warning.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from .conventions import BUDGET_RATIO_BOUNDS, RATIO_BOUNDS
from .errors import AnalysisError
from .table import Points

MAX_LISTED = 12  # rows named in one message


def exclude_incomplete(pts: Points) -> tuple[Points, list[str]]:
    """Keep runs whose status is 'completed' (or not recorded); count the others."""
    status = np.array([str(s).strip().lower() for s in pts.status], dtype=object)
    keep = (status == "completed") | (status == "")
    if keep.all():
        return pts, []
    counts = Counter(status[~keep])
    what = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    return pts.subset(keep), [f"excluded {(~keep).sum()} run(s) that did not complete ({what})"]


def drop_duplicates(pts: Points) -> tuple[Points, list[str]]:
    """Rows equal in flops, params, tokens, loss and budget are one run read twice (a CSV pasted
    twice, a table and its run directories): keep the first, warn naming the copies."""
    seen: dict[tuple, int] = {}
    keep = np.ones(len(pts), bool)
    pairs = []
    for i in range(len(pts)):
        key = (pts.flops[i], pts.params[i], pts.tokens[i], pts.loss[i], pts.budget[i] if np.isfinite(pts.budget[i]) else None)
        if key in seen:
            keep[i] = False
            pairs.append(f"{pts.label(i)} = {pts.label(seen[key])}")
        else:
            seen[key] = i
    if keep.all():
        return pts, []
    more = f"; and {len(pairs) - MAX_LISTED} more" if len(pairs) > MAX_LISTED else ""
    return pts.subset(keep), [f"{len(pairs)} duplicate row(s) counted once (first kept): {'; '.join(pairs[:MAX_LISTED])}{more}"]


def check_swapped(pts: Points) -> list[str]:
    """Params and tokens swapped: compute-optimal training uses more tokens than parameters, so a
    table where every row has tokens < params is refused; where most rows do, a warning (a grid far
    above the optimum can do that legitimately)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = pts.tokens / pts.params
    ok = np.isfinite(ratio)
    few = ok & (ratio < 1)
    if not ok.any() or not few.any():
        return []
    rows = ", ".join(pts.label(i) for i in np.flatnonzero(few)[:4])
    med = float(np.median(ratio[ok]))
    if few.sum() == ok.sum():
        raise AnalysisError(
            f"tokens < params in {few.sum()} of {ok.sum()} rows (median tokens/params {med:.3g}; e.g. {rows}): the "
            "params and tokens columns look swapped; params is N (model size), tokens is D (training tokens)"
        )
    return [f"tokens < params in {few.sum()} of {ok.sum()} rows (e.g. {rows}); check that the columns are not swapped"] \
        if few.sum() > ok.sum() / 2 else []


def row_problems(pts: Points, convention: str) -> dict[int, list[str]]:
    """Row index -> what is wrong with it."""
    problems: dict[int, list[str]] = {}
    for col in ("flops", "params", "tokens", "loss"):
        v = getattr(pts, col)
        for i in np.flatnonzero(~np.isfinite(v)):
            problems.setdefault(int(i), []).append(f"{col} is missing or not a finite number")
        for i in np.flatnonzero(np.isfinite(v) & (v <= 0)):
            problems.setdefault(int(i), []).append(f"{col}={v[i]:.6g} is not positive")
    lo, hi = RATIO_BOUNDS[convention]
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        ratio = pts.flops / (6.0 * pts.params * pts.tokens)
        bflops = np.where(np.isfinite(pts.budget_ref), pts.budget_ref, pts.flops)
        bratio = bflops / pts.budget
    positive = (pts.flops > 0) & (pts.params > 0) & (pts.tokens > 0)  # else already reported
    for i in np.flatnonzero(np.isfinite(ratio) & positive & ((ratio < lo) | (ratio > hi))):
        problems.setdefault(int(i), []).append(
            f"flops={pts.flops[i]:.4g} is {ratio[i]:.3g}x 6*params*tokens={6 * pts.params[i] * pts.tokens[i]:.4g} "
            f"(allowed {lo:g}-{hi:g} under {convention}): an overflowed or mislabelled FLOP column?"
        )
    blo, bhi = BUDGET_RATIO_BOUNDS
    for i in np.flatnonzero(np.isfinite(bratio) & (pts.budget > 0) & (pts.flops > 0) & ((bratio < blo) | (bratio > bhi))):
        what = "flops" if not np.isfinite(pts.budget_ref[i]) else "flops under the run's own convention"
        problems.setdefault(int(i), []).append(
            f"{what}={bflops[i]:.4g} is {bratio[i]:.3g}x its budget={pts.budget[i]:.4g} (allowed {blo:g}-{bhi:g})"
        )
    for i in np.flatnonzero(np.isfinite(pts.budget) & (pts.budget <= 0)):
        problems.setdefault(int(i), []).append(f"budget={pts.budget[i]:.6g} is not positive")
    return problems


def describe_rows(pts: Points, problems: dict[int, list[str]]) -> str:
    lines = [f"  {pts.label(i)}: {'; '.join(why)}" for i, why in sorted(problems.items())[:MAX_LISTED]]
    if len(problems) > MAX_LISTED:
        lines.append(f"  ... and {len(problems) - MAX_LISTED} more")
    return "\n".join(lines)


def validate(pts: Points, convention: str, drop_invalid: bool) -> tuple[Points, list[str]]:
    problems = row_problems(pts, convention)
    if not problems:
        return pts, []
    text = describe_rows(pts, problems)
    if not drop_invalid:
        raise AnalysisError(
            f"{len(problems)} invalid row(s) of {len(pts)} (convention {convention}):\n{text}\n"
            "Fix them, or pass --drop-invalid to leave them out with a warning."
        )
    keep = np.ones(len(pts), bool)
    keep[list(problems)] = False
    if not keep.any():
        raise AnalysisError(f"every row is invalid (convention {convention}):\n{text}")
    return pts.subset(keep), [f"DROPPED {len(problems)} invalid row(s) of {len(pts)} (--drop-invalid):\n{text}"]
