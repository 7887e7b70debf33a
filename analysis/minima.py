"""IsoFLOP minima (Approach 2): one parabola of loss against ln N per budget, near the minimum.

The window. A parabola fitted to *all* points of a budget is biased badly on real curves, whose
far ends rise faster than a parabola (../shared/data/README.md: a ≈ 1.2 against the published
0.84 on Porian et al.'s data). So the fit uses only the sizes near the minimum:
- every size within DEFAULT_WINDOW_DEX = 0.5 decades of N (a factor 3.2) of the centre, and at
  least the DEFAULT_WINDOW_POINTS = 5 sizes nearest it in rank (shifted inwards at the ends of
  the grid), so that sparse grids still get a parabola and dense ones get a stable one;
- the centre is first the empirical minimum (the lowest-loss point), then the vertex of that
  first parabola, and the parabola is refitted. Re-centring stops one noisy low point from
  placing the window alone; on synthetic sweeps it cut the error of a by a quarter, and it keeps
  the bootstrap distribution centred on the estimate.
`--window 7` (sizes only), `--window 0.3dex` (width, at least 5 sizes) and `--window 0.3dex,3`
change it; `--all-points` uses every point. These defaults reproduce Porian et al.'s five
RefinedWeb exponents within 0.025 (tests/analysis/test_analysis_porian.py).

Edge. A budget is flagged `edge` when its empirical minimum is the smallest or the largest size
sampled (with tied lowest losses: when every tied size is that end), when the parabola's vertex
falls outside the sampled sizes, or when it falls outside the window it was fitted on (after the
first-pass fallback below): the optimum was not bracketed, and the exponent fit leaves it out by
default. A parabola that opens downwards has no minimum and is flagged the same way. The reason
is kept (REASONS).

Every function here works on a batch of weight vectors W (replicates × points): ones for the
fit itself, multinomial counts for the bootstrap. Resampled duplicates count as weights.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from .errors import AnalysisError

DEFAULT_WINDOW_POINTS = 5
DEFAULT_WINDOW_DEX = 0.5
MIN_WINDOW_POINTS = 3  # a parabola needs three distinct sizes


@dataclass(frozen=True)
class Window:
    points: int = DEFAULT_WINDOW_POINTS  # at least this many distinct sizes around the empirical minimum
    dex: float | None = DEFAULT_WINDOW_DEX  # and every size within this many decades of it
    all_points: bool = False

    def describe(self) -> str:
        if self.all_points:
            return "all points of each budget (requested; biased on real data)"
        if self.dex is None:
            return f"the {self.points} sizes nearest the empirical minimum"
        return f"sizes within {self.dex:g} decades of the minimum (re-centred), at least {self.points}"


def parse_window(spec: str | None, all_points: bool = False) -> Window:
    """'5' → the 5 nearest sizes; '0.4dex' → ±0.4 decades (at least the default count);
    '0.4dex,3' → both given; None → the default."""
    if all_points:
        return Window(all_points=True)
    if spec is None:
        return Window()
    points, dex = DEFAULT_WINDOW_POINTS, None
    for part in spec.split(","):
        part = part.strip()
        m = re.fullmatch(r"([0-9.]+)\s*dex", part)
        try:
            if m:
                dex = float(m.group(1))
                if not dex > 0:
                    raise ValueError
            else:
                points = int(part)
        except ValueError:
            raise AnalysisError(
                f"--window {spec!r}: give a number of sizes (5), a half-width in decades of N (0.4dex), or both (0.4dex,5)"
            ) from None
    if points < MIN_WINDOW_POINTS:
        raise AnalysisError(f"--window {spec!r}: a parabola needs at least {MIN_WINDOW_POINTS} sizes")
    return Window(points=points, dex=dex)


# Why a budget is flagged (ParabolaBatch.code); 0: a bracketed minimum inside its own window.
NO_MINIMUM, LOW_AT_SMALLEST, LOW_AT_LARGEST, OUTSIDE_SIZES, OUTSIDE_WINDOW = 1, 2, 3, 4, 5
REASONS = {
    NO_MINIMUM: "no minimum: the parabola opens downwards",
    LOW_AT_SMALLEST: "minimum at the edge: lowest loss at the smallest size",
    LOW_AT_LARGEST: "minimum at the edge: lowest loss at the largest size",
    OUTSIDE_SIZES: "vertex outside the sampled sizes",
    OUTSIDE_WINDOW: "vertex outside the window it was fitted on",
}
TIE_RTOL = 1e-9  # losses this close to the lowest count as tied (digitised data repeat values)


@dataclass
class ParabolaBatch:
    """Per-replicate results for one budget; arrays of shape (replicates,)."""

    x_opt: np.ndarray  # ln N at the vertex
    loss_opt: np.ndarray
    curvature: np.ndarray  # d²L / d(ln N)² = 2·c2
    edge: np.ndarray  # bool: optimum not bracketed (see module doc); code != 0
    ok: np.ndarray  # bool: a vertex exists (≥3 sizes in the window, opens upwards)
    inside: np.ndarray  # bool: ok, and the vertex within the sampled sizes and its own window
    in_window: np.ndarray  # (replicates, points) bool
    code: np.ndarray = None  # int: 0, or the first reason of REASONS that applies
    fallback: np.ndarray = None  # bool: the re-centred vertex left its window; the first pass was kept
    window_range: np.ndarray = None  # (replicates, 2): smallest and largest ln N of the window
    enough: np.ndarray = None  # bool: the replicate holds at least MIN_WINDOW_POINTS distinct sizes


def _rank_window(P, rank, rmin, M, k):
    """Mask of present groups whose rank among present groups is in a k-wide window around rmin."""
    k = np.minimum(k, M)
    lo = np.clip(rmin - (k - 1) // 2, 0, np.maximum(M - k, 0))
    return P & (rank >= lo[:, None]) & (rank <= (lo + k - 1)[:, None])


def _solve(x, y, W, win, g, x0):
    """Weighted least-squares parabola per replicate over the window; returns vertex, loss, 2·c2, ok."""
    w = W * win[:, g]
    xc = x - x0
    S = np.stack([w @ xc**k for k in range(5)], axis=1)  # (rep, 5)
    T = np.stack([w @ (y * xc**k) for k in range(3)], axis=1)  # (rep, 3)
    A = np.stack([S[:, 0:3], S[:, 1:4], S[:, 2:5]], axis=1)  # normal equations (rep, 3, 3)
    enough = win.sum(1) >= MIN_WINDOW_POINTS
    coef = np.full((len(W), 3), np.nan)
    if enough.any():
        coef[enough] = np.linalg.solve(A[enough], T[enough][..., None])[..., 0]
    c0, c1, c2 = coef.T
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        xv = -c1 / (2 * c2)
        lv = c0 - c1**2 / (4 * c2)
        ok = enough & (c2 > 0) & np.isfinite(xv)
    return xv + x0, lv, 2 * c2, ok


def _span(win, u):
    """Smallest and largest ln N of each replicate's window (sizes mask)."""
    return np.where(win, u[None, :], np.inf).min(1), np.where(win, u[None, :], -np.inf).max(1)


def fit_parabolas(x: np.ndarray, y: np.ndarray, W: np.ndarray, window: Window) -> ParabolaBatch:
    """Fit loss y against x = ln N for each row of weights W (replicates × points).

    A vertex must lie inside the window it was fitted on: when the re-centred parabola's vertex
    leaves its window, the first-pass fit is kept (`fallback`) if its vertex lies inside its own
    window, else the budget is flagged OUTSIDE_WINDOW. Tied lowest losses: the first window is
    centred on the middle of the tied sizes, and the parabola decides; the minimum counts as
    being at an end of the grid only when every tied size is that end."""
    W = np.atleast_2d(W).astype(float)
    n_rep = W.shape[0]
    u, g = np.unique(x, return_inverse=True)  # distinct sizes and each point's size index
    onehot = np.zeros((len(x), len(u)))
    onehot[np.arange(len(x)), g] = 1.0
    P = (W @ onehot) > 0  # size present in the replicate
    M = P.sum(1)
    rank = np.cumsum(P, axis=1) - 1
    present = W > 0
    ymin = np.where(present, y, np.inf).min(1)
    tied = present & (y[None, :] <= (ymin + TIE_RTOL * np.abs(ymin))[:, None])
    tied_size = (tied.astype(float) @ onehot) > 0
    tr_lo = np.where(tied_size, rank, np.iinfo(np.int64).max).min(1)
    tr_hi = np.where(tied_size, rank, -1).max(1)
    rmin = (tr_lo + tr_hi) // 2  # the middle of the tied sizes (one size: itself)
    gmin = np.argmax(P & (rank == rmin[:, None]), axis=1)
    x0 = u.mean()

    def window_at(gc, xc):
        """Window centred on size index gc (rank window) and on ln N = xc (width window)."""
        win = _rank_window(P, rank, rank[np.arange(n_rep), gc], M, window.points)
        if window.dex is not None:
            win |= P & (np.abs(u[None, :] - xc[:, None]) <= window.dex * np.log(10) + 1e-9)
        return win

    def within(xv, win):
        lo, hi = _span(win, u)
        return (xv >= lo - 1e-9) & (xv <= hi + 1e-9)

    fallback = np.zeros(n_rep, bool)
    if window.all_points:
        win = P
        xv, lv, curv, ok = _solve(x, y, W, win, g, x0)
    else:
        win = window_at(gmin, u[gmin])
        xv, lv, curv, ok = _solve(x, y, W, win, g, x0)
        # second pass: centre the window on the first vertex when it lies among the sizes,
        # so that one noisy low point does not decide the window alone
        umin_, umax_ = np.where(P, u, np.inf).min(1), np.where(P, u, -np.inf).max(1)
        good = ok & (xv >= umin_) & (xv <= umax_)
        if good.any():
            gc = np.argmin(np.where(P, np.abs(u[None, :] - np.where(good, xv, 0)[:, None]), np.inf), axis=1)
            gc = np.where(good, gc, gmin)
            win2 = window_at(gc, np.where(good, xv, u[gmin]))
            xv2, lv2, curv2, ok2 = _solve(x, y, W, win2, g, x0)
            # the re-centred vertex must lie inside its own window; else keep the first pass
            # when that one's vertex lies inside its window
            take = good & ok2 & (within(xv2, win2) | ~within(xv, win))
            fallback = good & ~take
            win = np.where(take[:, None], win2, win)
            xv, lv, curv, ok = (np.where(take, b, a) for a, b in ((xv, xv2), (lv, lv2), (curv, curv2), (ok, ok2)))

    umin = np.where(P, u[None, :], np.inf).min(1)
    umax = np.where(P, u[None, :], -np.inf).max(1)
    code = np.zeros(n_rep, int)
    # the last assignment wins, so these go from the least to the most basic reason
    code[ok & ~within(xv, win)] = OUTSIDE_WINDOW
    # a replicate's vertex must lie within the budget's sampled sizes (all of them: a resample
    # that misses the smallest size may still put the optimum next to it) and those it has
    code[ok & ((xv < umin) | (xv > umax) | (xv < u[0]) | (xv > u[-1]))] = OUTSIDE_SIZES
    inside = ok & (code == 0)  # what a bootstrap replicate needs to count
    code[tr_lo == M - 1] = LOW_AT_LARGEST
    code[tr_hi == 0] = LOW_AT_SMALLEST
    code[~ok] = NO_MINIMUM
    wlo, whi = _span(win, u)
    return ParabolaBatch(
        x_opt=xv, loss_opt=lv, curvature=curv, edge=code != 0, ok=ok, inside=inside, in_window=win[:, g],
        code=code, fallback=fallback, window_range=np.stack([wlo, whi], 1), enough=M >= MIN_WINDOW_POINTS,
    )
