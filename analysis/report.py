"""Outputs of `analysis fit`: figures, minima.csv, report.md, and fit.json (written last)."""

from __future__ import annotations

import csv
import json
import os
import tempfile

import numpy as np

from .powerlaw import percentile_ci

FIT_JSON_VERSION = 1


def _f(x):
    """JSON-safe float (None for NaN/inf)."""
    if x is None:
        return None
    x = float(x)
    return x if np.isfinite(x) else None


def _ci(ci):
    return None if ci is None else [_f(ci[0]), _f(ci[1])]


def _pow10_ci(samples):
    ci = percentile_ci(samples)
    return None if ci is None else [10 ** ci[0], 10 ** ci[1]]


def _law_block(N_law, D_law) -> dict:
    return {
        "a": N_law.exponent,
        "b": D_law.exponent,
        "k_N": N_law.k,
        "k_D": D_law.k,
        "a_ci": _ci(N_law.exponent_ci),
        "b_ci": _ci(D_law.exponent_ci),
        "k_N_ci": _ci(_pow10_ci(N_law.boot_log10_k)),
        "k_D_ci": _ci(_pow10_ci(D_law.boot_log10_k)),
    }


def fit_dict(res, figures: list[str]) -> dict:
    a2 = res.approach2
    out = _law_block(a2.N_law, a2.D_law)
    out["a_plus_b"] = a2.N_law.exponent + a2.D_law.exponent
    out.update(
        convention=res.options.convention,
        loss=res.options.loss,
        window=a2.window.describe(),
        include_edge=res.options.include_edge,
        n_bootstrap=a2.n_boot,
        seed=res.options.seed,
        n_points=len(res.points),
        inputs=res.inputs,
        budgets=[
            {
                "budget": m.budget,
                "C": _f(m.C),
                "N_opt": _f(m.N_opt),
                "N_opt_ci": _ci(m.N_opt_ci),
                "D_opt": _f(m.D_opt),
                "D_opt_ci": _ci(m.D_opt_ci),
                "loss_opt": _f(m.loss_opt),
                "curvature": _f(m.curvature),
                "n_points": m.n_points,
                "n_window": m.n_window,
                "edge": m.edge,
                "has_minimum": m.has_minimum,
                "used": m.used,
            }
            for m in a2.budgets
        ],
        warnings=res.warnings,
        notes=res.notes,
        figures=figures,
    )
    # bootstrap lines for the planner's intervals: aligned replicates, NaN-free
    rows = np.stack([a2.N_law.boot_exponent, a2.N_law.boot_log10_k, a2.D_law.boot_exponent, a2.D_law.boot_log10_k], 1)
    rows = rows[np.all(np.isfinite(rows), 1)]
    out["bootstrap"] = {k: [float(f"{v:.10g}") for v in rows[:, i]] for i, k in enumerate(("a", "log10_k_N", "b", "log10_k_D"))}
    a1 = res.approach1
    out["approach1"] = None
    if a1 is not None:
        out["approach1"] = _law_block(a1.N_law, a1.D_law) | {"n_runs": len(a1.runs), "loss_source": a1.loss_source}
    a3 = res.approach3
    out["approach3"] = None
    if a3 is not None:
        from .approach3 import optimal_allocation

        b = a3.boot
        ab = b[:, 4] / (b[:, 3] + b[:, 4]) if len(b) else np.empty(0)
        kN, kD = optimal_allocation([a3.E, a3.A, a3.B, a3.alpha, a3.beta], 1.0)
        out["approach3"] = {
            "E": a3.E, "A": a3.A, "B": a3.B, "alpha": a3.alpha, "beta": a3.beta,
            "a": _f(a3.a), "b": _f(a3.b), "k_N": _f(kN), "k_D": _f(kD),
            "a_ci": _ci(percentile_ci(ab)), "b_ci": _ci(percentile_ci(1 - ab)),
            "alpha_ci": _ci(percentile_ci(b[:, 3])) if len(b) else None,
            "beta_ci": _ci(percentile_ci(b[:, 4])) if len(b) else None,
            "E_ci": _ci(percentile_ci(b[:, 0])) if len(b) else None,
            "n_points": a3.n_points,
            "n_bootstrap": len(b),
            "flops_per_token": "6N (C = 6ND maps compute to N and D)",
            "bootstrap": [[float(f"{v:.8g}") for v in row] for row in b],
        }
    out["version"] = FIT_JSON_VERSION
    return out


def _write_minima_csv(res, path):
    cols = ["budget", "C", "N_opt", "N_opt_lo", "N_opt_hi", "D_opt", "D_opt_lo", "D_opt_hi", "loss_opt",
            "curvature", "n_points", "n_window", "edge", "used"]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for m in res.approach2.budgets:
            nc, dc = m.N_opt_ci or (None, None), m.D_opt_ci or (None, None)
            vals = [m.budget, m.C, m.N_opt, nc[0], nc[1], m.D_opt, dc[0], dc[1], m.loss_opt, m.curvature,
                    m.n_points, m.n_window, m.edge, m.used]
            w.writerow(["" if v is None else (f"{v:.6g}" if isinstance(v, float) else v) for v in vals])


def _num(v, fmt="{:.3f}"):
    return "n/a" if v is None else fmt.format(v)


def _ci_text(ci, fmt="{:.3f}"):
    return f"[{fmt.format(ci[0])}, {fmt.format(ci[1])}]" if ci else "n/a"


def report_markdown(d: dict, figure_names: list[str]) -> str:
    L = ["# IsoFLOP fit", ""]
    L.append(f"Inputs: {', '.join(f'`{p}`' for p in d['inputs'])}; {d['n_points']} runs; FLOP convention **{d['convention']}**; "
             f"loss: {d['loss']}; {d['n_bootstrap']} bootstrap resamples (seed {d['seed']}).")
    L.append(f"Minima: parabola in ln N over {d['window']}.")
    L += ["", "## Exponents", "", "N_opt = k_N·C^a, D_opt = k_D·C^b; intervals are 95% bootstrap percentiles.", "",
          "| approach | a | a 95% CI | b | b 95% CI | k_N | k_D |", "|---|---|---|---|---|---|---|"]
    rows = [("2: IsoFLOP profiles", d)]
    if d["approach1"]:
        rows.append(("1: envelope of training curves", d["approach1"]))
    if d["approach3"]:
        rows.append(("3: parametric L(N, D)", d["approach3"]))
    for name, r in rows:
        L.append(f"| {name} | {_num(r['a'])} | {_ci_text(r['a_ci'])} | {_num(r['b'])} | {_ci_text(r['b_ci'])} | "
                 f"{_num(r['k_N'], '{:.3g}')} | {_num(r['k_D'], '{:.3g}')} |")
    L += ["", f"a + b = {d['a_plus_b']:.3f} (Approach 2)."]
    if not d["approach1"]:
        L.append("Approach 1 needs training curves (metrics.jsonl in run directories); none were given.")
    if d["approach3"]:
        r = d["approach3"]
        L.append(f"Approach 3: L(N, D) = {r['E']:.4g} + {r['A']:.4g}/N^{r['alpha']:.3f} + {r['B']:.4g}/D^{r['beta']:.3f} "
                 f"(α 95% CI {_ci_text(r['alpha_ci'])}, β {_ci_text(r['beta_ci'])}; Huber on log loss, L-BFGS, {r['n_bootstrap']} resamples).")
    L += ["", "## Figures", ""]
    captions = {"isoflop": "IsoFLOP profiles: loss against model size per budget, fitted parabolas and minima",
                "scaling": "Compute-optimal N and D against compute, fitted power laws, 95% bands and extrapolation",
                "approach1": "Approach 1: training curves, their lower envelope, and N_opt from it"}
    for name in figure_names:
        L += [f"![{captions.get(name, name)}]({name}.png)", "", f"*{captions.get(name, name)}* ([SVG]({name}.svg))", ""]
    L += ["## IsoFLOP minima", "",
          "| budget C | C at optimum | N_opt | N_opt 95% CI | D_opt | loss_opt | curvature d²L/d(ln N)² | points (window) | edge | used |",
          "|---|---|---|---|---|---|---|---|---|---|"]
    for m in d["budgets"]:
        n, D = _num(m["N_opt"], "{:.3g}"), _num(m["D_opt"], "{:.3g}")
        lo, cv = _num(m["loss_opt"], "{:.4f}"), _num(m["curvature"], "{:.4f}")
        L.append(f"| {m['budget']:.3g} | {_num(m['C'], '{:.3g}')} | {n} | {_ci_text(m['N_opt_ci'], '{:.3g}')} | {D} | {lo} | {cv} | "
                 f"{m['n_points']} ({m['n_window']}) | {'yes' if m['edge'] else 'no'} | {'yes' if m['used'] else 'no'} |")
    L += ["", "## Warnings", ""]
    L += [f"- {w}" for w in d["warnings"]] or ["None."]
    if d["notes"]:
        L += ["", "## Notes", ""] + [f"- {n}" for n in d["notes"]]
    return "\n".join(L) + "\n"


def write_outputs(res, out_dir: str) -> dict:
    """Write everything; fit.json goes last and atomically, so it exists only for a whole fit."""
    from . import plots

    os.makedirs(out_dir, exist_ok=True)
    conv = res.options.convention
    figs = plots.isoflop_figure(res.approach2, conv, out_dir)
    figs += plots.scaling_figure(res.approach2, res.approach1, res.approach3, conv, out_dir)
    if res.approach1 is not None:
        figs += plots.approach1_figure(res.approach1, res.approach2, conv, out_dir)
    d = fit_dict(res, [os.path.basename(p) for p in figs])
    names = [os.path.splitext(os.path.basename(p))[0] for p in figs if p.endswith(".png")]
    minima = os.path.join(out_dir, "minima.csv")
    _write_minima_csv(res, minima)
    report = os.path.join(out_dir, "report.md")
    with open(report, "w") as f:
        f.write(report_markdown(d, names))
    fit_path = os.path.join(out_dir, "fit.json")
    fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=".fit.", suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump(d, f, indent=1, allow_nan=False)
    os.replace(tmp, fit_path)
    return {"fit": fit_path, "minima": minima, "report": report, "figures": figs, "dict": d}


def summary(paths: dict) -> str:
    d = paths["dict"]
    used = sum(m["used"] for m in d["budgets"])
    lines = [f"fit: {d['n_points']} runs, {len(d['budgets'])} budgets ({used} used), convention {d['convention']}, "
             f"{d['n_bootstrap']} bootstrap resamples"]
    if d["warnings"]:
        lines.append(f"{len(d['warnings'])} warning(s), listed above and in {paths['report']}")
    for name, key in (("Approach 1", "approach1"), ("Approach 3", "approach3")):
        if d[key]:
            r = d[key]
            lines.append(f"{name}: a = {_num(r['a'])} {_ci_text(r['a_ci'])}, b = {_num(r['b'])} {_ci_text(r['b_ci'])}")
    lines.append(f"wrote {paths['fit']}, {paths['minima']}, {paths['report']}")
    lines.append(f"Approach 2: a = {d['a']:.3f} {_ci_text(d['a_ci'])}, b = {d['b']:.3f} {_ci_text(d['b_ci'])} (95% CI; N_opt ∝ C^a, D_opt ∝ C^b)")
    lines.append("figures: " + " ".join(p for p in paths["figures"] if p.endswith(".png")))
    return "\n".join(lines)
