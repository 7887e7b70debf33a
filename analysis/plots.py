"""Figures (PNG and SVG): IsoFLOP profiles, N_opt/D_opt against C, and Approach 1's envelope."""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402
from matplotlib.ticker import LogFormatter  # noqa: E402

EXTRAPOLATE_DEX = 3  # the fitted lines run this many decades of C past the largest budget
CMAP = plt.get_cmap("viridis")

plt.rcParams.update({"font.size": 10, "axes.titlesize": 11, "axes.grid": True, "grid.alpha": 0.3, "svg.hashsalt": "isoflop"})


_SUP = str.maketrans("0123456789-", "⁰¹²³⁴⁵⁶⁷⁸⁹⁻")


class _PowerFormatter(LogFormatter):
    """Log-axis labels as 10¹⁹ and 3×10¹⁹ in plain Unicode: the same look as matplotlib's
    default, without its mathtext parsing, which took a third of `fit`'s run time."""

    def _num_to_string(self, x, vmin, vmax):
        e = int(np.floor(np.log10(x) + 1e-9))
        m = x / 10**e
        power = "10" + str(e).translate(_SUP)
        return power if abs(m - 1) < 1e-6 else f"{m:.2g}×{power}"


def _log(ax, which="xy"):
    for w in which:
        axis = ax.xaxis if w == "x" else ax.yaxis
        (ax.set_xscale if w == "x" else ax.set_yscale)("log")
        axis.set_major_formatter(_PowerFormatter(10))
        axis.set_minor_formatter(_PowerFormatter(10, labelOnlyBase=False))


def _colorbar(fig, mappable, ax, label):
    cb = fig.colorbar(mappable, ax=ax, pad=0.02)
    cb.set_label(label)
    cb.ax.yaxis.set_major_formatter(_PowerFormatter(10))
    cb.ax.yaxis.set_minor_formatter(_PowerFormatter(10, labelOnlyBase=False))


def _colour(norm, C):
    return CMAP(0.9 * norm(C))  # stop before viridis' pale yellow, which vanishes on white


def _fmt_ci(ci, law=None):
    if ci:
        return f"[{ci[0]:.3f}, {ci[1]:.3f}]"
    reason = getattr(law, "exponent_ci_reason", None)
    return f"interval unavailable ({reason})" if reason else "(no interval)"


def _save(fig, out_dir, name):
    paths = []
    for ext in ("png", "svg"):
        p = os.path.join(out_dir, f"{name}.{ext}")
        fig.savefig(p, dpi=130 if ext == "png" else None, metadata={"Date": None} if ext == "svg" else None)
        paths.append(p)
    plt.close(fig)
    return paths


def isoflop_figure(a2, convention, out_dir):
    fig, ax = plt.subplots(figsize=(8, 6.2))
    # fixed margins (constrained layout doubled the run time); the legend goes below the axes
    fig.subplots_adjust(left=0.09, right=1.0, bottom=0.2, top=0.94)
    norm = LogNorm(min(m.budget for m in a2.budgets), max(m.budget for m in a2.budgets) * 1.0001)
    lo = min(m.loss.min() for m in a2.budgets)
    hi_win = max(m.loss[m.in_window].max() for m in a2.budgets)
    hi = min(max(m.loss.max() for m in a2.budgets), hi_win + 0.6 * (hi_win - lo))
    size = float(np.clip(4000 / sum(len(m.N) for m in a2.budgets), 6, 22))  # smaller dots when dense
    for m in a2.budgets:
        c = _colour(norm, m.budget)
        ax.scatter(m.N[m.in_window], m.loss[m.in_window], color=c, s=size, zorder=3)
        ax.scatter(m.N[~m.in_window], m.loss[~m.in_window], facecolor="none", edgecolor=c, s=size, lw=0.8, zorder=3)
        if not m.has_minimum:
            continue
        wN = m.N[m.in_window]
        grid = np.logspace(np.log10(wN.min()) - 0.15, np.log10(wN.max()) + 0.15, 80)
        ax.plot(grid, m.parabola(grid), color=c, lw=1.5, zorder=2)
        ci = m.N_opt_ci
        if ci and m.used:
            # a percentile interval need not contain the estimate (skewed resamples): clip at 0
            xerr = [[max(0.0, m.N_opt - ci[0])], [max(0.0, ci[1] - m.N_opt)]]
            ax.errorbar(m.N_opt, m.loss_opt, xerr=xerr, color="k", lw=0.8, capsize=2, zorder=4)
        marker = dict(marker="*", s=150, color=c, edgecolor="k", lw=0.8) if m.used else dict(marker="X", s=70, color="0.6", edgecolor="k", lw=0.6)
        ax.scatter([m.N_opt], [m.loss_opt], zorder=5, **marker)
    _log(ax, "x")
    ax.set_ylim(lo - 0.05 * (hi - lo), hi)
    Nall = np.concatenate([m.N for m in a2.budgets])
    ax.set_xlim(Nall.min() / 1.6, Nall.max() * 1.6)  # a vertex far outside the sizes must not squash the view
    Lall = np.concatenate([m.loss for m in a2.budgets])
    above = Lall > hi
    off = [f"{above.sum()} point(s) above the top of the axis (loss up to {Lall.max():.3g})"] if above.any() else []
    far = [m for m in a2.budgets if m.has_minimum and not (Nall.min() / 1.6 <= m.N_opt <= Nall.max() * 1.6)]
    if far:
        off.append(f"{len(far)} vertex(es) beyond the x axis (N_opt {', '.join(f'{m.N_opt:.3g}' for m in far)})")
    if off:
        ax.text(0.01, 0.06, "; ".join(off), transform=ax.transAxes, fontsize=8, color="C3")
    ax.set_xlabel("model size N [parameters]")
    ax.set_ylabel("loss [nats/token]")
    ax.set_title("IsoFLOP profiles (Approach 2): loss against model size at fixed compute")
    ax.text(0.01, 0.015, f"fit window: {a2.window.describe()}", transform=ax.transAxes, fontsize=8, color="0.3")
    sm = plt.cm.ScalarMappable(norm=norm, cmap=matplotlib.colors.ListedColormap(CMAP(np.linspace(0, 0.9, 256))))
    _colorbar(fig, sm, ax, f"compute budget C [FLOPs, {convention}]")
    handles = [
        plt.Line2D([], [], marker="o", ls="", color="0.3", label="run (filled: inside the fit window)"),
        plt.Line2D([], [], color="0.3", lw=1.5, label="parabola in ln N"),
        plt.Line2D([], [], marker="*", ms=12, ls="", color="0.5", mec="k", label="minimum, 95% CI (used)"),
    ]
    if any(not m.used for m in a2.budgets):
        handles.append(plt.Line2D([], [], marker="X", ms=8, ls="", color="0.6", mec="k", label="edge minimum (left out)"))
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.09), ncol=2, fontsize=8, frameon=False)
    return _save(fig, out_dir, "isoflop")


def _law_lines(ax, law, C_lo, C_hi, colour, label, ls="-", band=True):
    inside = np.logspace(np.log10(C_lo), np.log10(C_hi), 50)
    beyond = np.logspace(np.log10(C_hi), np.log10(C_hi) + EXTRAPOLATE_DEX, 50)
    ax.plot(inside, law.predict(inside), color=colour, ls=ls, lw=1.8, label=label)
    ax.plot(beyond, law.predict(beyond), color=colour, ls=":" if ls == "-" else ls, lw=1.4)
    if band:
        full = np.concatenate([inside, beyond])
        ci = law.predict_ci(full)
        if ci is not None:
            ax.fill_between(full, ci[0], ci[1], color=colour, alpha=0.18, lw=0)


def scaling_figure(a2, a1, a3, convention, out_dir):
    from .approach3 import optimal_allocation

    fig, axes = plt.subplots(1, 2, figsize=(12, 6.2))
    fig.subplots_adjust(left=0.07, right=0.985, bottom=0.3, top=0.94, wspace=0.2)  # legends below the axes
    used, left = a2.used, [m for m in a2.budgets if not m.used and m.has_minimum]
    C_lo, C_hi = min(m.C for m in used), max(m.C for m in used)
    for ax, what, law, name in ((axes[0], "N", a2.N_law, "a"), (axes[1], "D", a2.D_law, "b")):
        _law_lines(ax, law, C_lo, C_hi, "C0", f"Approach 2: {what}_opt ∝ C^{name}, {name} = {law.exponent:.3f}, 95% CI {_fmt_ci(law.exponent_ci, law)}")
        y = np.array([getattr(m, f"{what}_opt") for m in used])
        cis = [getattr(m, f"{what}_opt_ci") for m in used]
        err = np.clip(np.array([[v - c[0], c[1] - v] if c else [0, 0] for v, c in zip(y, cis)]).T, 0, None)
        ax.errorbar([m.C for m in used], y, yerr=err, fmt="o", color="C0", mec="k", ms=6, capsize=2, zorder=4, label="IsoFLOP minima (95% CI)")
        if left:
            ax.scatter([m.C for m in left], [getattr(m, f"{what}_opt") for m in left], marker="X", s=50, color="0.6", edgecolor="k", zorder=4, label="edge minima (left out)")
        if a1 is not None:
            l1 = a1.N_law if what == "N" else a1.D_law
            _law_lines(ax, l1, a1.C[a1.used].min(), a1.C[a1.used].max(), "C1", f"Approach 1: {name} = {l1.exponent:.3f} {_fmt_ci(l1.exponent_ci, l1)}", ls="--", band=False)
        if a3 is not None:
            Cg = np.logspace(np.log10(C_lo), np.log10(C_hi) + EXTRAPOLATE_DEX, 80)
            p = np.array([a3.E, a3.A, a3.B, a3.alpha, a3.beta])
            v = optimal_allocation(p, Cg)[0 if what == "N" else 1]
            e3 = a3.a if what == "N" else a3.b
            ax.plot(Cg, v, color="C2", ls="-.", lw=1.5, label=f"Approach 3: {name} = {e3:.3f}")
        _log(ax)
        ax.set_xlabel(f"compute C [FLOPs, {convention}]")
        ax.set_ylabel("optimal model size N_opt [parameters]" if what == "N" else "optimal data D_opt [tokens]")
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.12), frameon=False)
    axes[0].set_title("Compute-optimal model size (dotted: extrapolation, band: 95% CI)")
    axes[1].set_title("Compute-optimal training tokens")
    return _save(fig, out_dir, "scaling")


def approach1_figure(a1, a2, convention, out_dir):
    fig, axes = plt.subplots(1, 2, figsize=(12, 6))
    fig.subplots_adjust(left=0.06, right=0.985, bottom=0.26, top=0.94, wspace=0.25)  # legends below the axes
    ax = axes[0]
    Ns = np.array([r[0] for r in a1.runs])
    norm = LogNorm(Ns.min(), Ns.max() * 1.0001)
    for N, f, loss in a1.runs:
        ax.plot(f, loss, color=_colour(norm, N), lw=0.8, alpha=0.8)
    ax.plot(a1.C, a1.loss, color="k", lw=2.2, label="lower envelope")
    _log(ax, "x")
    ax.set_xlim(a1.C.min() / 3, a1.C.max() * 1.3)
    hi = np.nanpercentile(np.concatenate([r[2] for r in a1.runs]), 75)
    ax.set_ylim(np.nanmin(a1.loss) - 0.1, max(hi, np.nanmax(a1.loss) + 0.1))
    ax.set_xlabel(f"compute C [FLOPs, {convention}]")
    ax.set_ylabel(f"loss [nats/token] ({a1.loss_source})")
    ax.set_title("Approach 1: training curves and their lower envelope")
    sm = plt.cm.ScalarMappable(norm=norm, cmap=matplotlib.colors.ListedColormap(CMAP(np.linspace(0, 0.9, 256))))
    _colorbar(fig, sm, ax, "model size N [parameters]")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), fontsize=8, frameon=False)
    ax = axes[1]
    ax.scatter(a1.C[a1.used], a1.N_opt[a1.used], s=14, color="C1", label="envelope winner N at C")
    if (~a1.used).any():
        ax.scatter(a1.C[~a1.used], a1.N_opt[~a1.used], s=14, facecolor="none", edgecolor="0.5", label="edge (left out)")
    _law_lines(ax, a1.N_law, a1.C[a1.used].min(), a1.C[a1.used].max(), "C1", f"Approach 1: a = {a1.N_law.exponent:.3f} {_fmt_ci(a1.N_law.exponent_ci, a1.N_law)}")
    if a2 is not None:
        used = a2.used
        _law_lines(ax, a2.N_law, min(m.C for m in used), max(m.C for m in used), "C0", f"Approach 2: a = {a2.N_law.exponent:.3f}", ls="--", band=False)
    _log(ax)
    ax.set_xlabel(f"compute C [FLOPs, {convention}]")
    ax.set_ylabel("optimal model size N_opt [parameters]")
    ax.set_title("Approach 1: N_opt from the envelope")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.12), frameon=False)
    return _save(fig, out_dir, "approach1")
