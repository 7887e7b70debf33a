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


def percentile_ci(samples: np.ndarray) -> list[float] | None:
    s = np.asarray(samples, dtype=float)
    s = s[np.isfinite(s)]
    if len(s) < 10:  # too few replicates to say anything
        return None
    half = (100 - CI_LEVEL) / 2
    lo, hi = np.percentile(s, [half, 100 - half])
    return [float(lo), float(hi)]


@dataclass
class PowerLaw:
    """Y = k·C^exponent. `boot_*`: per-replicate exponent and log10 k (aligned, may hold NaN)."""

    exponent: float
    log10_k: float
    boot_exponent: np.ndarray
    boot_log10_k: np.ndarray

    @property
    def k(self) -> float:
        return float(10**self.log10_k)

    @property
    def exponent_ci(self):
        return percentile_ci(self.boot_exponent)

    def predict(self, C):
        return 10 ** (self.log10_k + self.exponent * np.log10(C))

    def predict_ci(self, C):
        """95% band of the prediction at C (array) from the bootstrap lines, or None."""
        ok = np.isfinite(self.boot_exponent) & np.isfinite(self.boot_log10_k)
        if ok.sum() < 10:
            return None
        logC = np.log10(np.atleast_1d(C))
        pred = self.boot_log10_k[ok, None] + self.boot_exponent[ok, None] * logC[None, :]
        half = (100 - CI_LEVEL) / 2
        return 10 ** np.percentile(pred, [half, 100 - half], axis=0)


def fit_power_law(C, Y, boot_C=None, boot_Y=None, boot_ok=None) -> PowerLaw:
    """Fit log10 Y = log10 k + e·log10 C; bootstrap arrays are (replicates × points)."""
    e, c = masked_line(np.log10(C), np.log10(Y), np.ones(len(C), bool))
    if boot_Y is None:
        be, bc = np.empty(0), np.empty(0)
    else:
        be, bc = masked_line(np.log10(boot_C), np.log10(boot_Y), boot_ok)
    return PowerLaw(float(e[0]), float(c[0]), be, bc)
