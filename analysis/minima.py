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
sampled, or when the parabola's vertex falls outside the sampled sizes: the optimum was not
bracketed, and the exponent fit leaves it out by default. A parabola that opens downwards has no
minimum and is flagged the same way.

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


@dataclass
class ParabolaBatch:
    """Per-replicate results for one budget; arrays of shape (replicates,)."""

    x_opt: np.ndarray  # ln N at the vertex
    loss_opt: np.ndarray
    curvature: np.ndarray  # d²L / d(ln N)² = 2·c2
    edge: np.ndarray  # bool: optimum not bracketed (see module doc)
    ok: np.ndarray  # bool: a vertex exists (≥3 sizes in the window, opens upwards)
    inside: np.ndarray  # bool: ok, and the vertex lies within the budget's sampled sizes
    in_window: np.ndarray  # (replicates, points) bool


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
    with np.errstate(divide="ignore", invalid="ignore"):
        xv = -c1 / (2 * c2)
        lv = c0 - c1**2 / (4 * c2)
    return xv + x0, lv, 2 * c2, enough & (c2 > 0) & np.isfinite(xv)


def fit_parabolas(x: np.ndarray, y: np.ndarray, W: np.ndarray, window: Window) -> ParabolaBatch:
    """Fit loss y against x = ln N for each row of weights W (replicates × points)."""
    W = np.atleast_2d(W).astype(float)
    n_rep = W.shape[0]
    rows = np.arange(n_rep)
    u, g = np.unique(x, return_inverse=True)  # distinct sizes and each point's size index
    onehot = np.zeros((len(x), len(u)))
    onehot[np.arange(len(x)), g] = 1.0
    P = (W @ onehot) > 0  # size present in the replicate
    M = P.sum(1)
    rank = np.cumsum(P, axis=1) - 1
    imin = np.argmin(np.where(W > 0, y, np.inf), axis=1)  # empirical minimum
    gmin = g[imin]
    rmin = rank[rows, gmin]
    x0 = u.mean()

    def window_at(gc, xc):
        """Window centred on size index gc (rank window) and on ln N = xc (width window)."""
        win = _rank_window(P, rank, rank[rows, gc], M, window.points)
        if window.dex is not None:
            win |= P & (np.abs(u[None, :] - xc[:, None]) <= window.dex * np.log(10) + 1e-9)
        return win

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
            take = good & ok2
            win = np.where(take[:, None], win2, win)
            xv, lv, curv, ok = (np.where(take, b, a) for a, b in ((xv, xv2), (lv, lv2), (curv, curv2), (ok, ok2)))

    # A replicate's vertex counts when it lies within the budget's sampled sizes (all of them:
    # a resample that misses the smallest size may still put the optimum next to it).
    inside = ok & (xv >= u[0]) & (xv <= u[-1])
    umin = np.where(P, u[None, :], np.inf).min(1)
    umax = np.where(P, u[None, :], -np.inf).max(1)
    edge = ~ok | (xv < umin) | (xv > umax) | (rmin == 0) | (rmin == M - 1)
    return ParabolaBatch(x_opt=xv, loss_opt=lv, curvature=curv, edge=edge, ok=ok, inside=inside, in_window=win[:, g])
