"""`analysis fit` end to end, in memory: load → check → budgets → Approaches 2, 1, 3.

Nothing is written here; report.py writes the outputs only once every step has succeeded.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .approach1 import Approach1, fit_approach1
from .approach2 import Approach2, fit_approach2
from .approach3 import Approach3Fit, fit_approach3
from .errors import AnalysisError
from .blas import one_blas_thread
from .budgets import assign_budgets
from .conventions import check_convention
from .load import load
from .minima import parse_window
from .setup import common_setup, setup_overrides
from .table import Points
from .validate import check_swapped, drop_duplicates, exclude_incomplete, validate

APPROACH3_MAX_BOOT = 200  # each resample is one L-BFGS run; 200 keep `fit` within seconds
APPROACH3_MIN_POINTS = 10  # five parameters


@dataclass
class FitOptions:
    convention: str = "6N"
    window: str | None = None
    all_points: bool = False
    drop_invalid: bool = False
    include_edge: bool = False
    n_boot: int = 1000
    seed: int = 0
    loss: str = "val"
    approach1: bool = True
    approach3: bool = True


@dataclass
class FitResult:
    inputs: list
    options: FitOptions
    points: Points
    budget: np.ndarray
    approach2: Approach2
    approach1: Approach1 | None
    approach3: Approach3Fit | None
    warnings: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    setup: dict | None = None  # the sweep's training setup (setup.py), None without config.yaml
    sensitivity: list = field(default_factory=list)  # a, b under each convention and parameter count


def run_fit(paths, opts: FitOptions | None = None, warnings: list | None = None) -> FitResult:
    """`warnings` (optional) collects warnings as they arise, so a caller can show them even when
    a later step fails."""
    import scipy.optimize  # noqa: F401  (Approach 3 needs it; loaded first so its OpenBLAS is limited too)

    with one_blas_thread():
        return _run_fit(paths, opts, warnings)


def _run_fit(paths, opts, warnings) -> FitResult:
    opts = opts or FitOptions()
    warnings = [] if warnings is None else warnings
    check_convention(opts.convention)
    window = parse_window(opts.window, opts.all_points)
    pts, notes = load(paths, opts.convention, opts.loss, curves=opts.approach1)
    pts, w = exclude_incomplete(pts)
    warnings += w
    pts, w = drop_duplicates(pts)
    warnings += w
    pts, w = validate(pts, opts.convention, opts.drop_invalid)
    warnings += w
    warnings += check_swapped(pts)
    try:
        budget, n = assign_budgets(pts)
        notes += n
        iso = _isoflop(pts, budget)
    except AnalysisError as e:
        budget, iso = np.full(len(pts), np.nan), f"its FLOPs do not group into budgets ({str(e).split(';')[0]})"
    setup = None
    config, n = common_setup({w: pts.setups[w] for w in pts.where if w in pts.setups})
    notes += n
    if config is not None:
        n_csv = sum(1 for w in pts.where if w not in pts.setups)
        if n_csv:
            notes.append(f"{n_csv} row(s) from CSV files carry no training setup; it is read from the run directories")
        ov, verified, how = setup_overrides(config)
        setup = {"config": config, "overrides": ov, "verified": verified, "how": how,
                 "n_runs": sum(1 for w in pts.where if pts.setups.get(w) is not None)}
    if iso is not True:
        # not an IsoFLOP table (an N x D grid, say): Approach 3 alone, on every point
        if not (opts.approach3 and len(pts) >= APPROACH3_MIN_POINTS):
            raise AnalysisError(f"not an IsoFLOP table: {iso}; Approach 3 needs at least {APPROACH3_MIN_POINTS} points "
                                "(and no --no-approach3) to fit it")
        rng = np.random.default_rng(opts.seed + 1)
        a3 = fit_approach3(pts.params, pts.tokens, pts.loss, min(opts.n_boot, APPROACH3_MAX_BOOT), rng)
        warnings.append(f"not an IsoFLOP table ({iso}): a, b, k_N and k_D come from Approach 3 alone")
        a2 = approach2_from_approach3(a3, window)
        return FitResult(list(map(str, paths)), opts, pts, budget, a2, None, a3, warnings, notes, setup, [])
    a2 = fit_approach2(
        pts, budget, window, opts.n_boot, opts.seed, opts.include_edge, opts.drop_invalid, opts.convention, warnings
    )
    a1 = fit_approach1(pts, n_boot=min(opts.n_boot, 200), seed=opts.seed) if opts.approach1 else None
    if opts.approach1 and a1 is None and pts.curves:
        warnings.append(
            f"Approach 1 not fitted: {len(pts.curves)} runs have curves, but fewer than 3 of distinct sizes "
            "or the envelope is won by the smallest or largest size at every FLOP count"
        )
    a3 = None
    if opts.approach3 and len(pts) >= APPROACH3_MIN_POINTS:
        rng = np.random.default_rng(opts.seed + 1)
        a3 = fit_approach3(pts.params, pts.tokens, pts.loss, min(opts.n_boot, APPROACH3_MAX_BOOT), rng)
        if not (0.01 < a3.alpha < 3 and 0.01 < a3.beta < 3):
            warnings.append(f"Approach 3 landed on α = {a3.alpha:.3g}, β = {a3.beta:.3g}: the data do not pin L(N, D) down")
    sens = sensitivity(pts, budget, window, opts)
    return FitResult(list(map(str, paths)), opts, pts, budget, a2, a1, a3, warnings, notes, setup, sens)


def _isoflop(pts: Points, budget: np.ndarray):
    """True when some budget holds 3 or more model sizes, else why the table is not IsoFLOP."""
    for b in np.unique(budget[np.isfinite(budget)]):
        if len(np.unique(pts.params[budget == b])) >= 3:
            return True
    return "no budget holds 3 or more model sizes"


def approach2_from_approach3(a3, window):
    """Approach 3's allocation in Approach 2's place (N_opt = k_N·C^a, no budgets), for tables that
    are not IsoFLOP, so that fit.json, the report and `plan` read the same keys."""
    from .approach2 import Approach2
    from .approach3 import optimal_allocation
    from .powerlaw import PowerLaw

    p = np.array([a3.E, a3.A, a3.B, a3.alpha, a3.beta])
    kN, kD = optimal_allocation(p, 1.0)
    b = a3.boot
    with np.errstate(all="ignore"):
        bkN, bkD = optimal_allocation(b, 1.0) if len(b) else (np.empty(0), np.empty(0))
        ba = b[:, 4] / (b[:, 3] + b[:, 4]) if len(b) else np.empty(0)
        N_law = PowerLaw(a3.a, float(np.log10(kN)), ba, np.log10(bkN), a3.n_requested)
        D_law = PowerLaw(a3.b, float(np.log10(kD)), 1 - ba, np.log10(bkD), a3.n_requested)
    return Approach2([], N_law, D_law, window, a3.n_requested, [])


def sensitivity(pts: Points, budget: np.ndarray, window, opts: FitOptions) -> list[dict]:
    """Approach 2's a and b (point estimates) refitted under every FLOP convention and parameter
    count the run directories record; [] for CSV input, which holds one convention."""
    out = []
    for (conv, pk), (flops, params) in sorted(pts.alt.items()):
        row = {"convention": conv, "params": pk, "a": None, "b": None, "budgets_used": 0, "note": ""}
        ok = np.isfinite(flops) & np.isfinite(params) & (flops > 0) & (params > 0)
        if not ok.any():
            row["note"] = "not recorded by the runs"
            out.append(row)
            continue
        alt = pts.subset(ok)
        alt.flops, alt.params = flops[ok], params[ok]
        try:
            res = fit_approach2(alt, budget[ok], window, 0, opts.seed, opts.include_edge, True, conv, [])
            row.update(a=res.N_law.exponent, b=res.D_law.exponent, budgets_used=len(res.used))
        except AnalysisError as e:
            row["note"] = str(e).split(":")[0]
        out.append(row)
    return out
