"""Approach 3: fit L(N, D) = E + A/N^α + B/D^β to every point (Hoffmann et al. 2022, §3.3).

As in Chinchilla and Epoch AI's replication (Besiroglu et al. 2024):
- the objective is a Huber loss (δ = 1e-3) between log L and the log of the prediction,
  written with log-sum-exp so E, A and B stay positive: log L̂ = LSE(a - α log N, b - β log D, e);
- L-BFGS-B from a grid of initialisations. The grid below is Chinchilla's. Scoring all 4,500
  starts costs one vectorised pass, and L-BFGS then runs from the best few (a full L-BFGS from
  each start takes minutes and lands on the same optimum);
- intervals by bootstrap: resample points, refit from the full-data optimum.

With C ≈ 6ND the compute-optimal allocation is N_opt = G (C/6)^a, D_opt = G⁻¹ (C/6)^b with
a = β/(α+β), b = α/(α+β), G = (αA / βB)^(1/(α+β)).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np

HUBER_DELTA = 1e-3  # Chinchilla's δ
# α, β ≥ 0: a negative exponent makes loss grow with N or D. On real sweeps with few points the
# unbounded fit found α = -3.9; the bound keeps such a fit physical, and pipeline.py warns on it.
BOUNDS = [(None, None), (None, None), (None, None), (0.0, 10.0), (0.0, 10.0)]
N_REFINE = 8  # L-BFGS runs from this many best grid starts

# Chinchilla's grid: α, β ∈ {0, .5, …, 2}, e ∈ {-1, -.5, …, 1}, a, b ∈ {0, 5, …, 25}
GRID = np.array(
    list(
        itertools.product(
            np.arange(-1.0, 1.01, 0.5),  # e = log E
            np.arange(0.0, 25.1, 5.0),  # a = log A
            np.arange(0.0, 25.1, 5.0),  # b = log B
            np.arange(0.0, 2.01, 0.5),  # α
            np.arange(0.0, 2.01, 0.5),  # β
        )
    )
)


@dataclass
class Approach3Fit:
    E: float
    A: float
    B: float
    alpha: float
    beta: float
    n_points: int
    huber_loss: float
    boot: np.ndarray = field(default_factory=lambda: np.empty((0, 5)))  # rows of (E, A, B, α, β)
    n_requested: int = 0  # resamples asked for
    residual_rms_log: float = float("nan")  # scatter of log L about the law (dof-corrected): one run's noise

    @property
    def a(self) -> float:
        return self.beta / (self.alpha + self.beta)

    @property
    def b(self) -> float:
        return self.alpha / (self.alpha + self.beta)

    def predict(self, N, D):
        return predict_loss(np.array([self.E, self.A, self.B, self.alpha, self.beta]), N, D)


def predict_loss(p, N, D):
    """L(N, D) for p = (E, A, B, α, β); p may be (..., 5) to broadcast over bootstrap samples."""
    p = np.asarray(p, dtype=float)
    E, A, B, al, be = (p[..., i] for i in range(5))
    return E + A / np.power(N, al) + B / np.power(D, be)


def optimal_allocation(p, C):
    """(N_opt, D_opt) minimising L under C = 6·N·D, for p = (E, A, B, α, β) (broadcasts)."""
    p = np.asarray(p, dtype=float)
    _, A, B, al, be = (p[..., i] for i in range(5))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):  # α or β = 0: no optimum (inf)
        G = np.power(al * A / (be * B), 1.0 / (al + be))
        a, b = be / (al + be), al / (al + be)
        return G * np.power(C / 6.0, a), np.power(C / 6.0, b) / G


def _objective(theta, logN, logD, logL, w):
    """Weighted Huber loss of log L and its gradient in θ = (e, a, b, α, β)."""
    e, a, b, al, be = theta
    t1 = a - al * logN
    t2 = b - be * logD
    m = np.maximum(np.maximum(t1, t2), e)
    x1, x2, x3 = np.exp(t1 - m), np.exp(t2 - m), np.exp(e - m)
    s = x1 + x2 + x3
    r = m + np.log(s) - logL
    absr = np.abs(r)
    small = absr <= HUBER_DELTA
    loss = np.where(small, 0.5 * r * r, HUBER_DELTA * (absr - 0.5 * HUBER_DELTA))
    dr = w * np.clip(r, -HUBER_DELTA, HUBER_DELTA) / s
    g1, g2, g3 = dr * x1, dr * x2, dr * x3
    grad = np.array([g3.sum(), g1.sum(), g2.sum(), -(g1 * logN).sum(), -(g2 * logD).sum()])
    return float((w * loss).sum()), grad


def _grid_scores(logN, logD, logL):
    """Huber loss at every grid start, vectorised in chunks (grid × points)."""
    out = np.empty(len(GRID))
    for i in range(0, len(GRID), 500):
        g = GRID[i : i + 500, :, None]
        t1 = g[:, 1] - g[:, 3] * logN
        t2 = g[:, 2] - g[:, 4] * logD
        r = np.logaddexp(np.logaddexp(t1, t2), g[:, 0]) - logL
        absr = np.abs(r)
        out[i : i + 500] = np.where(absr <= HUBER_DELTA, 0.5 * r * r, HUBER_DELTA * (absr - 0.5 * HUBER_DELTA)).sum(1)
    return out


VARPRO_ALPHA = np.arange(0.02, 1.5001, 0.02)  # variable projection grid over α and β


def varpro_start(logN, logD, L):
    """Variable projection (Open-Athena's `vpnls`): on a grid of (α, β), E, A, B ≥ 0 enter
    L = E + A·N^-α + B·D^-β linearly, so each grid point is one non-negative least-squares solve;
    returns θ = (log E, log A, log B, α, β) of the best, or None. Used as one more L-BFGS start
    beside Chinchilla's grid: on grid (non-IsoFLOP) tables it starts near the optimum where the
    coarse grid does not."""
    # every (α, β) at once: unconstrained least squares through the 3x3 normal equations, in
    # units of the mean loss; grid points with a negative E, A or B are not solutions (NNLS would
    # put them on a face, with a larger residual than some interior grid point nearby)
    scale = L.mean()
    y = L / scale
    Pa = np.exp(-np.outer(VARPRO_ALPHA, logN))  # (grid, points)
    Pb = np.exp(-np.outer(VARPRO_ALPHA, logD))
    na = len(VARPRO_ALPHA)
    n = len(L)
    S = np.empty((na, na, 3, 3))
    S[..., 0, 0] = n
    S[..., 0, 1] = S[..., 1, 0] = Pa.sum(1)[:, None]
    S[..., 0, 2] = S[..., 2, 0] = Pb.sum(1)[None, :]
    S[..., 1, 1] = (Pa * Pa).sum(1)[:, None]
    S[..., 2, 2] = (Pb * Pb).sum(1)[None, :]
    S[..., 1, 2] = S[..., 2, 1] = Pa @ Pb.T
    T = np.stack(np.broadcast_arrays(y.sum(), (Pa @ y)[:, None], (Pb @ y)[None, :]), -1)
    with np.errstate(all="ignore"):
        try:
            coef = np.linalg.solve(S + 1e-12 * np.eye(3), T[..., None])[..., 0]
        except np.linalg.LinAlgError:
            return None
        # residual sum of squares: y·y − 2 c·T + c·S·c
        rss = y @ y - 2 * (coef * T).sum(-1) + np.einsum("...i,...ij,...j->...", coef, S, coef)
    rss = np.where(np.all(coef > 0, -1) & np.isfinite(rss), rss, np.inf)
    if not np.isfinite(rss).any():
        return None
    i, j = np.unravel_index(np.argmin(rss), rss.shape)
    E, A, B = coef[i, j] * scale
    return np.array([np.log(E), np.log(A), np.log(B), VARPRO_ALPHA[i], VARPRO_ALPHA[j]])


def _lbfgs(theta0, logN, logD, logL, w, maxiter=2000):
    from scipy.optimize import minimize  # here, so that the planner does not pay for importing it

    # tolerances are tight because the Huber objective is tiny (residuals ~1e-2 in log loss);
    # scipy's defaults stop early here, the failure Besiroglu et al. found in the original fit
    res = minimize(
        _objective,
        theta0,
        args=(logN, logD, logL, w),
        jac=True,
        method="L-BFGS-B",
        bounds=BOUNDS,
        options={"maxiter": maxiter, "ftol": 1e-14, "gtol": 1e-12},
    )
    return res.x, res.fun


def fit_approach3(N, D, L, n_boot: int = 0, rng: np.random.Generator | None = None) -> Approach3Fit:
    """Fit L(N, D) to points (N params, D tokens, L loss); bootstrap `n_boot` resamples."""
    import scipy.optimize  # noqa: F401  (load its OpenBLAS before limiting the threads of every loaded one)

    from .blas import one_blas_thread

    with one_blas_thread():
        return _fit_approach3(N, D, L, n_boot, rng)


def _fit_approach3(N, D, L, n_boot, rng) -> Approach3Fit:
    logN, logD, logL = np.log(N), np.log(D), np.log(L)
    w = np.ones_like(logL)
    scores = _grid_scores(logN, logD, logL)
    # L-BFGS works on centred logs: a - α·log N = (a - α·m) - α·(log N - m). The same objective,
    # but a and α no longer move together, which cuts L-BFGS's iterations several-fold.
    mN, mD = logN.mean(), logD.mean()
    cN, cD = logN - mN, logD - mD

    def centre(t):
        return np.array([t[0], t[1] - t[3] * mN, t[2] - t[4] * mD, t[3], t[4]])

    def uncentre(t):
        return np.array([t[0], t[1] + t[3] * mN, t[2] + t[4] * mD, t[3], t[4]])

    best_theta, best_f = None, np.inf
    starts = [GRID[i] for i in np.argsort(scores)[:N_REFINE]]
    vp = varpro_start(logN, logD, np.exp(logL))
    if vp is not None:
        starts.append(vp)
    for start in starts:
        theta, f = _lbfgs(centre(start), cN, cD, logL, w)
        if f < best_f and np.all(np.isfinite(theta)):
            best_theta, best_f = theta, f
    e, a, b, al, be = uncentre(best_theta)
    fit = Approach3Fit(float(np.exp(e)), float(np.exp(a)), float(np.exp(b)), float(al), float(be), len(L), float(best_f))
    resid = logL - np.log(predict_loss([fit.E, fit.A, fit.B, fit.alpha, fit.beta], np.exp(logN), np.exp(logD)))
    if len(L) > 5:
        fit.residual_rms_log = float(np.sqrt((resid**2).sum() / (len(L) - 5)))

    if n_boot > 0:
        rng = rng or np.random.default_rng(0)
        n = len(L)
        boot = []
        for _ in range(n_boot):
            wb = np.bincount(rng.integers(0, n, n), minlength=n).astype(float)
            # from the optimum a resample converges in ~25 iterations; 300 bounds degenerate fits
            theta = uncentre(_lbfgs(best_theta, cN, cD, logL, wb, maxiter=300)[0])
            boot.append([np.exp(theta[0]), np.exp(theta[1]), np.exp(theta[2]), theta[3], theta[4]])
        boot = np.array(boot)
        fit.n_requested = n_boot
        fit.boot = boot[np.all(np.isfinite(boot), axis=1) & (boot[:, 3] > 0) & (boot[:, 4] > 0)]
    return fit
