"""Approach 1: the lower envelope of training curves against FLOPs (Hoffmann et al. 2022, §3.1).

Each run's curve (metrics.jsonl) is put on a FLOP axis as tokens × the run's FLOPs per token
under the chosen convention. On a log-spaced grid of C between the smallest and the largest
final FLOPs, the run with the lowest loss at C (curves interpolated in log FLOPs) gives N_opt(C),
and its tokens at C give D_opt(C). A grid point whose winner is the smallest or largest model
still running at C is an edge point and is left out: a size outside the sweep might have won.
Then N_opt and D_opt get power laws, with intervals from resampling whole runs.

Caveat that Chinchilla shares: a point mid-way through a run sits on a schedule that has not
decayed yet, so the envelope is built from points that are worse than a run of that length.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .powerlaw import PowerLaw, fit_power_law
from .table import Curve, Points

N_GRID = 60
MIN_RUNS = 3


@dataclass
class Approach1:
    C: np.ndarray  # FLOP grid
    N_opt: np.ndarray  # winner's N at each C (NaN where no run reaches C)
    D_opt: np.ndarray
    loss: np.ndarray  # envelope loss
    used: np.ndarray  # bool: not an edge point
    N_law: PowerLaw
    D_law: PowerLaw
    runs: list  # (N, flops array, loss array) for the figure
    loss_source: str


def _smooth(c: Curve) -> np.ndarray:
    if c.source == "val_loss":
        return c.loss
    w = max(1, len(c.loss) // 25)  # train loss is per-step noisy
    if w == 1:
        return c.loss
    k = np.ones(w) / w
    pad = np.pad(c.loss, (w // 2, w - 1 - w // 2), mode="edge")
    return np.convolve(pad, k, mode="valid")


def _envelope(Lmat, N):
    """Winner N index per grid column, and its edge flag, for a (runs × grid) loss matrix."""
    have = np.isfinite(Lmat)
    win = np.argmin(np.where(have, Lmat, np.inf), axis=0)
    nmin = np.where(have, N[:, None], np.inf).min(0)
    nmax = np.where(have, N[:, None], -np.inf).max(0)
    wn = N[win]
    edge = (wn <= nmin) | (wn >= nmax) | (have.sum(0) < 2)
    return win, edge


def fit_approach1(pts: Points, n_boot: int = 200, seed: int = 0) -> Approach1 | None:
    """None when fewer than MIN_RUNS runs of distinct sizes have curves."""
    rows = []
    for i in range(len(pts)):
        c = pts.curves.get(pts.run_id[i] or pts.where[i])
        if c is not None:
            fpt = pts.flops[i] / pts.tokens[i]
            order = np.argsort(c.tokens)
            rows.append((pts.params[i], c.tokens[order] * fpt, _smooth(c)[order], fpt, c.source))
    if len(rows) < MIN_RUNS or len({r[0] for r in rows}) < 2:
        return None
    N = np.array([r[0] for r in rows])
    fpt = np.array([r[3] for r in rows])
    C = np.logspace(np.log10(min(r[1][-1] for r in rows)), np.log10(max(r[1][-1] for r in rows)), N_GRID)
    logC = np.log(C)
    Lmat = np.array([np.interp(logC, np.log(f), l, left=np.nan, right=np.nan) for _, f, l, _, _ in rows])
    win, edge = _envelope(Lmat, N)
    cols = np.arange(len(C))
    N_opt, D_opt, loss = N[win], C / fpt[win], Lmat[win, cols]
    used = ~edge & np.isfinite(loss)
    if len(np.unique(N_opt[used])) < 2:
        return None

    boot = {}
    if n_boot > 0:
        rng = np.random.default_rng(seed)
        idx = rng.integers(0, len(rows), size=(n_boot, len(rows)))
        bN, bD, bok = (np.empty((n_boot, len(C))) for _ in range(3))
        for r in range(n_boot):
            w, e = _envelope(Lmat[idx[r]], N[idx[r]])
            bN[r], bD[r], bok[r] = N[idx[r]][w], C / fpt[idx[r]][w], ~e
        boot = {"N": (np.broadcast_to(C, bN.shape), bN, bok.astype(bool)), "D": (np.broadcast_to(C, bN.shape), bD, bok.astype(bool))}
    N_law = fit_power_law(C[used], N_opt[used], *boot.get("N", (None, None, None)), n_requested=n_boot)
    D_law = fit_power_law(C[used], D_opt[used], *boot.get("D", (None, None, None)), n_requested=n_boot)
    runs = [(r[0], r[1], r[2]) for r in rows]
    return Approach1(C, N_opt, D_opt, loss, used, N_law, D_law, runs, ",".join(sorted({r[4] for r in rows})))
