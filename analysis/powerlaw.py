"""Power laws Y = k·C^e fitted as straight lines in log-log space, with bootstrap intervals."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CI_LEVEL = 95


def masked_line(x: np.ndarray, y: np.ndarray, mask: np.ndarray):
    """Least-squares slope and intercept of y on x per row, over mask; NaN where < 2 distinct x."""
    x, y, mask = np.atleast_2d(x), np.atleast_2d(y), np.atleast_2d(mask)
    m = mask & np.isfinite(x) & np.isfinite(y)
    n = m.sum(1)
    xs, ys = np.where(m, x, 0.0), np.where(m, y, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        xm, ym = xs.sum(1) / n, ys.sum(1) / n
        dx = np.where(m, x - xm[:, None], 0.0)
        dy = np.where(m, y - ym[:, None], 0.0)
        sxx = (dx * dx).sum(1)
        slope = (dx * dy).sum(1) / sxx
        slope = np.where((n >= 2) & (sxx > 1e-12), slope, np.nan)
    return slope, ym - slope * xm


MIN_RESAMPLES = 10  # fewer usable resamples than this say nothing
MIN_USABLE_SHARE = 0.25  # ... nor do fewer than this share of those requested
MIN_DISTINCT = 10  # resamples that take fewer distinct values are degenerate


def percentile_ci(samples: np.ndarray) -> list[float] | None:
    """The plain (uncentred) percentile interval; kept for comparison (see centred_ci)."""
    s = np.asarray(samples, dtype=float)
    s = s[np.isfinite(s)]
    if len(s) < MIN_RESAMPLES:  # too few replicates to say anything
        return None
    half = (100 - CI_LEVEL) / 2
    lo, hi = np.percentile(s, [half, 100 - half])
    return [float(lo), float(hi)]


def centred_ci(estimate, samples, n_requested: int | None = None, log: bool = False):
    """95% interval from bootstrap replicates that always contains the estimate: (ci, reason).

    Method: the hull of two intervals, the plain percentile interval [q₂.₅, q₉₇.₅] and the same
    interval re-centred on the estimate, [θ̂ + q₂.₅ − q₅₀, θ̂ + q₉₇.₅ − q₅₀] (in log space for
    positive quantities with log=True). A plain percentile interval can exclude θ̂ when the
    replicates sit off it (windowed parabolas refitted on resampled points: shares of replicates
    below the estimate of 1% to 81% were seen on real data). Re-centring alone lost coverage on
    synthetic sweeps, where the replicates' median lies between the estimate and the truth (the
    resamples average over window choices): 4 of 8 draws covered the truth against 8 of 8. The
    hull keeps both properties. Degenerate replicates give (None, reason): fewer than
    MIN_RESAMPLES usable or fewer than MIN_USABLE_SHARE of `n_requested`, fewer than
    MIN_DISTINCT distinct values, or zero width."""
    s = np.asarray(samples, dtype=float).ravel()
    est = float(estimate) if estimate is not None else np.nan
    if log:
        with np.errstate(divide="ignore", invalid="ignore"):
            s, est = np.log(s), np.log(est) if est > 0 else np.nan
    s = s[np.isfinite(s)]
    n_req = n_requested if n_requested else len(np.asarray(samples).ravel())
    if not np.isfinite(est):
        return None, "no estimate"
    if n_req == 0:
        return None, "no bootstrap resamples"
    if len(s) < max(MIN_RESAMPLES, MIN_USABLE_SHARE * n_req):
        return None, f"only {len(s)} of {n_req} resamples usable"
    scale = max(1.0, abs(est))
    distinct = len(np.unique(np.round(s / scale, 9)))
    if distinct < MIN_DISTINCT:
        return None, f"the {len(s)} usable resamples take {distinct} distinct value{'s' * (distinct != 1)}"
    half = (100 - CI_LEVEL) / 2
    lo, med, hi = np.percentile(s, [half, 50, 100 - half])
    if hi - lo <= 1e-9 * scale:
        return None, f"zero width over {len(s)} resamples"
    ci = [min(lo, est + lo - med), max(hi, est + hi - med)]
    if log:
        ci = [float(np.exp(v)) for v in ci]
    return [float(v) for v in ci], None


def share_below(estimate, samples) -> float | None:
    """The share of finite replicates below the estimate (0.5 for a centred bootstrap)."""
    s = np.asarray(samples, dtype=float)
    s = s[np.isfinite(s)]
    return float((s < estimate).mean() + 0.5 * (s == estimate).mean()) if len(s) else None


@dataclass
class PowerLaw:
    """Y = k·C^exponent. `boot_*`: per-replicate exponent and log10 k (aligned, may hold NaN)."""

    exponent: float
    log10_k: float
    boot_exponent: np.ndarray
    boot_log10_k: np.ndarray
    n_requested: int = 0  # resamples asked for (0: as many as boot_exponent holds)

    @property
    def k(self) -> float:
        return float(10**self.log10_k)

    @property
    def exponent_ci(self):
        return centred_ci(self.exponent, self.boot_exponent, self.n_requested)[0]

    @property
    def exponent_ci_reason(self):
        return centred_ci(self.exponent, self.boot_exponent, self.n_requested)[1]

    @property
    def k_ci(self):
        ci = centred_ci(self.log10_k, self.boot_log10_k, self.n_requested)[0]
        return None if ci is None else [10 ** ci[0], 10 ** ci[1]]

    def predict(self, C):
        return 10 ** (self.log10_k + self.exponent * np.log10(C))

    def predict_ci(self, C):
        """95% band of the prediction at C (array) from the bootstrap lines, centred on the line
        (the hull of centred_ci), or None when the exponent's interval is unavailable."""
        ok = np.isfinite(self.boot_exponent) & np.isfinite(self.boot_log10_k)
        if self.exponent_ci is None:
            return None
        logC = np.log10(np.atleast_1d(C))
        pred = self.boot_log10_k[ok, None] + self.boot_exponent[ok, None] * logC[None, :]
        half = (100 - CI_LEVEL) / 2
        q = np.percentile(pred, [half, 50, 100 - half], axis=0)
        point = self.log10_k + self.exponent * logC
        shifted = point[None, :] + q[[0, 2]] - q[1][None, :]
        return 10 ** np.stack([np.minimum(q[0], shifted[0]), np.maximum(q[2], shifted[1])])


def fit_power_law(C, Y, boot_C=None, boot_Y=None, boot_ok=None, n_requested: int = 0) -> PowerLaw:
    """Fit log10 Y = log10 k + e·log10 C; bootstrap arrays are (replicates × points)."""
    e, c = masked_line(np.log10(C), np.log10(Y), np.ones(len(C), bool))
    if boot_Y is None:
        be, bc = np.empty(0), np.empty(0)
    else:
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            be, bc = masked_line(np.log10(boot_C), np.log10(boot_Y), boot_ok)
    return PowerLaw(float(e[0]), float(c[0]), be, bc, n_requested)
