"""Approach 2: per-budget IsoFLOP minima, then N_opt = k_N·C^a and D_opt = k_D·C^b.

For each budget: the parabola minimum gives N_opt and loss_opt (minima.py). C at the optimum is
the budget's FLOPs under the chosen convention, read at N_opt from a log-log line through the
window's points (exactly the budget when every run used it); D_opt = C / (FLOPs per token at
N_opt), the FLOPs per token again read off a log-log line (exactly 6·N_opt under 6N).

Intervals (95%, bootstrap centred on the estimate, powerlaw.centred_ci): each replicate resamples
the points of every budget with replacement, refits every minimum (window chosen afresh) and
refits both lines. A replicate's budget is left out of that replicate's line when its parabola has
no vertex inside the sampled sizes and its own window. Edge budgets, and budgets whose resampled
vertices lie inside in fewer than MIN_STABLE_SHARE of the resamples (Porian et al.'s rule), are
left out of the lines unless `include_edge`.

Diagnostics by name: weak curvature (the parabola rises less across its window than WEAK_RISE
times the scatter of the window's points about it) and outlying points (a residual beyond
OUTLIER_SCALES times the robust scatter of the neighbouring budgets' windows).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .errors import AnalysisError
from .minima import MIN_WINDOW_POINTS, REASONS, Window, fit_parabolas
from .powerlaw import PowerLaw, centred_ci, fit_power_law, masked_line
from .table import Points

A_PLUS_B_TOLERANCE = 0.02  # under 6ND, D = C/6N makes a + b = 1 up to step rounding
MIN_STABLE_SHARE = 0.5  # a budget whose resampled vertices are mostly not inside is left out
WEAK_RISE = 3.0  # weak curvature: rise across the window below this many residual scatters
OFFCENTRE_FACTOR = 2.0  # grid diagnostics: warn when N_opt lies this far from the centre of the sizes
OUTLIER_MIN_SIZES = 5  # outliers are sought in windows of this many sizes (2 residual dof) or more
OUTLIER_SCALES = 5.0  # outlier: studentized residual beyond this many robust scatters (1.4826·MAD)


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
    boot_enough: np.ndarray = field(repr=False, default=None)  # resamples with >= 3 distinct sizes
    reason: str = ""  # why the budget is flagged (edge, no minimum, unstable); "" when not
    fallback: bool = False  # the re-centred vertex left its window: the first-pass fit is kept
    window_N: tuple = (np.nan, np.nan)  # smallest and largest N of the fit window
    rise: float = np.nan  # loss rise of the parabola from the vertex to the window's far end
    scatter: float = np.nan  # RMS residual of the window's points (NaN with 3 sizes: exact)
    weak: bool = False  # weak curvature: rise < WEAK_RISE · scatter
    residual: np.ndarray = field(repr=False, default=None)  # loss − parabola, window points (NaN outside)
    loo: np.ndarray = field(repr=False, default=None)  # studentized: residual / sqrt(1 - leverage)
    labels: np.ndarray = field(repr=False, default=None)  # row labels, same order as N
    outliers: list = field(default_factory=list)  # labels of outlying points
    n_boot: int = 0

    @property
    def position(self) -> float:
        """Where N_opt sits in the budget's sampled sizes, in log: 0 smallest, 1 largest."""
        lo, hi = np.log(self.N.min()), np.log(self.N.max())
        return float((np.log(self.N_opt) - lo) / (hi - lo)) if hi > lo and self.N_opt > 0 else float("nan")

    @property
    def offcentre(self) -> float:
        """N_opt over the geometric centre of the sampled sizes (1: centred)."""
        return float(self.N_opt / np.sqrt(self.N.min() * self.N.max()))

    def _ci(self, est, boot):
        if self.boot_N is None or self.n_boot == 0:
            return None, "no bootstrap resamples"
        return centred_ci(est, boot[self.boot_ok], self.n_boot, log=True)

    @property
    def N_opt_ci(self):
        return self._ci(self.N_opt, self.boot_N)[0]

    @property
    def N_opt_ci_reason(self):
        return self._ci(self.N_opt, self.boot_N)[1]

    @property
    def D_opt_ci(self):
        return self._ci(self.D_opt, self.boot_D)[0]

    @property
    def D_opt_ci_reason(self):
        return self._ci(self.D_opt, self.boot_D)[1]

    @property
    def boot_share_inside(self):
        """Share of the resamples that can hold a parabola (>= 3 sizes) whose vertex counts."""
        if self.boot_ok is None or not self.boot_enough.any():
            return None
        return float(self.boot_ok[self.boot_enough].mean())

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
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):  # resampled vertices far out
            C = np.exp(iC + sC * xo)
            return C, C / np.exp(iF + sF * xo)

    xo = fit.x_opt[0]
    C, D = C_D(xo)
    code = int(fit.code[0])
    wlo, whi = np.exp(fit.window_range[0])
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
        reason="" if code == 0 else REASONS[code] + (
            f" ({np.exp(xo):.3g} against the window {wlo:.3g}-{whi:.3g})" if code == 5 else
            f" ({np.exp(xo):.3g} against {N.min():.3g}-{N.max():.3g})" if code == 4 else ""),
        fallback=bool(fit.fallback[0]),
        window_N=(float(wlo), float(whi)),
        labels=np.array([pts.label(i) for i in idx], dtype=object),
        n_boot=n_boot,
    )
    if m.has_minimum:
        m.residual = np.where(win, y - m.parabola(N), np.nan)
        nw = int(win.sum())
        if len(np.unique(N[win])) > 3:
            m.scatter = float(np.sqrt(np.nansum(m.residual**2) / (nw - 3)))
        if len(np.unique(N[win])) >= OUTLIER_MIN_SIZES:
            # studentized residuals r / sqrt(1 - h), h from the hat matrix of the window's design:
            # the end points of a window have high leverage and small raw residuals
            X = np.vander(x[win] - x[win].mean(), 3)
            h = np.einsum("ij,ji->i", X, np.linalg.pinv(X.T @ X) @ X.T)
            m.loo = np.full(len(N), np.nan)
            with np.errstate(divide="ignore", invalid="ignore"):
                m.loo[win] = m.residual[win] / np.sqrt(np.where(h < 1 - 1e-9, 1 - h, np.nan))
        m.rise = float(0.5 * m.curvature * max((np.log(wlo) - xo) ** 2, (np.log(whi) - xo) ** 2))
        m.weak = bool(np.isfinite(m.scatter) and m.rise < WEAK_RISE * m.scatter)
    if n_boot > 0:
        W = rng.multinomial(len(x), np.full(len(x), 1.0 / len(x)), size=n_boot)
        bf = fit_parabolas(x, y, W, window)
        bC, bD = C_D(bf.x_opt)
        with np.errstate(over="ignore"):
            m.boot_N = np.exp(bf.x_opt)
        m.boot_enough = bf.enough
        m.boot_C, m.boot_D, m.boot_ok = bC, bD, bf.inside & np.isfinite(bC) & np.isfinite(bD) & (bD > 0) & np.isfinite(m.boot_N)
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
        share = m.boot_share_inside
        if not m.edge and share is not None and share < MIN_STABLE_SHARE:
            m.edge = True
            m.reason = (f"unstable: {share:.0%} of resampled vertices lie inside the sampled sizes and their "
                        f"window (fewer than {MIN_STABLE_SHARE:.0%} of the resamples with 3 or more sizes)")
        m.used = m.has_minimum and (include_edge or not m.edge)
    fellback = [m for m in minima if m.fallback]
    if fellback:
        warnings.append(
            "re-centred vertex outside its window, first-pass window kept: "
            + ", ".join(f"budget {m.budget:.3g} (window {m.window_N[0]:.3g}-{m.window_N[1]:.3g}, N_opt {m.N_opt:.3g})" for m in fellback)
        )
    weak = [m for m in minima if m.weak and m.has_minimum]
    if weak:
        warnings.append(
            "weak curvature (the parabola rises less across its window than "
            f"{WEAK_RISE:g}x the scatter of its points): "
            + ", ".join(f"budget {m.budget:.3g} (rise {m.rise:.3g}, scatter {m.scatter:.3g})" for m in weak)
        )
    # outliers: studentized window residuals against the robust scatter (1.4826·MAD) of the
    # neighbouring budgets' (two on each side, the budget itself left out, since a 5-point
    # window absorbs its own outlier); noise changes with C on real sweeps (Porian et al.)
    have = [m for m in minima if m.loo is not None]
    if len(have) >= 2:
        out = []
        for k, m in enumerate(have):
            near = [have[j].loo for j in range(max(0, k - 2), min(len(have), k + 3)) if j != k]
            r = np.concatenate([v[np.isfinite(v)] for v in near])
            scale = 1.4826 * float(np.median(np.abs(r)))
            if not scale > 0:
                continue
            bad = np.flatnonzero(np.abs(np.nan_to_num(m.loo)) > OUTLIER_SCALES * scale)
            m.outliers = [str(m.labels[j]) for j in bad]
            out += [f"{m.labels[j]} (budget {m.budget:.3g}, N {m.N[j]:.3g}: {m.residual[j]:+.3g} from the parabola, "
                    f"studentized {abs(m.loo[j]) / scale:.1f}x the neighbouring budgets' robust scatter {scale:.2g})" for j in bad]
        if out:
            warnings.append(f"outlying point(s), kept: {'; '.join(out[:12])}" + (f"; and {len(out) - 12} more" if len(out) > 12 else ""))
    off = [m for m in minima if m.has_minimum and np.isfinite(m.offcentre)
           and abs(np.log(m.offcentre)) > np.log(OFFCENTRE_FACTOR)]
    if off:
        warnings.append(
            f"grid off-centre by more than {OFFCENTRE_FACTOR:g}x: "
            + ", ".join(f"budget {m.budget:.3g} (N_opt {m.N_opt:.3g} is {m.offcentre:.2g}x the centre of its sizes "
                        f"{m.N.min():.3g}-{m.N.max():.3g}, position {m.position:.2f})" for m in off)
            + "; re-centre the grid on this fit with `python -m sweeps ... sweep.prior_fit=<this fit.json>`, "
            "or extend an edge budget with `python -m sweeps refine <sweep dir>`"
        )
    flagged = [m for m in minima if not m.used]
    if flagged:
        text = ", ".join(f"{m.budget:.3g} ({m.reason})" for m in flagged)
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
        N_law = fit_power_law(C, [m.N_opt for m in used], bC, np.stack([m.boot_N for m in used], 1), ok, n_boot)
        D_law = fit_power_law(C, [m.D_opt for m in used], bC, np.stack([m.boot_D for m in used], 1), ok, n_boot)
    else:
        N_law = fit_power_law(C, np.array([m.N_opt for m in used]), **boot)
        D_law = fit_power_law(C, np.array([m.D_opt for m in used]), **boot)
    s = N_law.exponent + D_law.exponent
    if convention in ("6N", "6N_nonembed") and abs(s - 1) > A_PLUS_B_TOLERANCE:
        warnings.append(f"a + b = {s:.3f}, far from 1 under {convention} (C = 6ND): check the FLOPs or tokens")
    return Approach2(minima, N_law, D_law, window, n_boot, warnings)
