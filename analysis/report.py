"""Outputs of `analysis fit`: figures, minima.csv, report.md, and fit.json (written last)."""

from __future__ import annotations

import csv
import json
import os
import tempfile

import numpy as np

from .fitjson import FIT_JSON_VERSION
from .powerlaw import centred_ci, share_below

CI_METHOD = ("95% bootstrap intervals that contain the estimate: the hull of the percentile interval of the "
             "resamples and the same interval shifted so that their median is the estimate (log scale for N, D, k)")


def _f(x):
    """JSON-safe float (None for NaN/inf)."""
    if x is None:
        return None
    x = float(x)
    return x if np.isfinite(x) else None


def _ci(ci):
    return None if ci is None else [_f(ci[0]), _f(ci[1])]


def _put_ci(out: dict, key: str, ci_reason):
    """out[key] = the interval, or None with out[key + '_unavailable'] = why."""
    ci, reason = ci_reason
    out[key] = _ci(ci)
    if ci is None:
        out[key + "_unavailable"] = reason or "no bootstrap resamples"
    return out


def _law_block(N_law, D_law) -> dict:
    out = {"a": N_law.exponent, "b": D_law.exponent, "k_N": N_law.k, "k_D": D_law.k}
    _put_ci(out, "a_ci", centred_ci(N_law.exponent, N_law.boot_exponent, N_law.n_requested))
    _put_ci(out, "b_ci", centred_ci(D_law.exponent, D_law.boot_exponent, D_law.n_requested))
    for key, law in (("k_N_ci", N_law), ("k_D_ci", D_law)):
        ci, why = centred_ci(law.log10_k, law.boot_log10_k, law.n_requested)
        _put_ci(out, key, (None if ci is None else [10 ** ci[0], 10 ** ci[1]], why))
    return out


def _budget_dict(m) -> dict:
    d = {
        "budget": m.budget,
        "C": _f(m.C),
        "N_opt": _f(m.N_opt),
        "D_opt": _f(m.D_opt),
        "loss_opt": _f(m.loss_opt),
        "curvature": _f(m.curvature),
        "n_points": m.n_points,
        "n_window": m.n_window,
        "window_N": [_f(m.window_N[0]), _f(m.window_N[1])],
        "edge": m.edge,
        "has_minimum": m.has_minimum,
        "used": m.used,
        "reason": m.reason,
        "fallback_first_pass": m.fallback,
        "weak_curvature": m.weak,
        "rise": _f(m.rise),
        "scatter": _f(m.scatter),
        "outliers": list(m.outliers),
        "n_bootstrap_used": int(m.boot_ok.sum()) if m.boot_ok is not None else 0,
        "position": _f(m.position),
        "offcentre": _f(m.offcentre),
    }
    _put_ci(d, "N_opt_ci", (m.N_opt_ci, m.N_opt_ci_reason))
    _put_ci(d, "D_opt_ci", (m.D_opt_ci, m.D_opt_ci_reason))
    return d


def fit_dict(res, figures: list[str]) -> dict:
    a2 = res.approach2
    out = _law_block(a2.N_law, a2.D_law)
    out["primary"] = "approach2" if a2.budgets else "approach3"
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
        budgets=[_budget_dict(m) for m in a2.budgets],
        warnings=res.warnings,
        notes=res.notes,
        figures=figures,
    )
    # bootstrap lines for the planner's intervals: aligned replicates, NaN-free
    rows = np.stack([a2.N_law.boot_exponent, a2.N_law.boot_log10_k, a2.D_law.boot_exponent, a2.D_law.boot_log10_k], 1)
    rows = rows[np.all(np.isfinite(rows), 1)]
    out["bootstrap_check"] = {
        "method": CI_METHOD,
        "a_share_below": share_below(a2.N_law.exponent, a2.N_law.boot_exponent),
        "b_share_below": share_below(a2.D_law.exponent, a2.D_law.boot_exponent),
        "n_used": int(len(rows)),
    }
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
        n3 = a3.n_requested or len(b)
        out["approach3"] = {
            "E": a3.E, "A": a3.A, "B": a3.B, "alpha": a3.alpha, "beta": a3.beta,
            "a": _f(a3.a), "b": _f(a3.b), "k_N": _f(kN), "k_D": _f(kD),
        }
        r3 = out["approach3"]
        _put_ci(r3, "a_ci", centred_ci(a3.a, ab, n3))
        _put_ci(r3, "b_ci", centred_ci(a3.b, 1 - ab, n3))
        for key, col, est in (("alpha_ci", 3, a3.alpha), ("beta_ci", 4, a3.beta), ("E_ci", 0, a3.E)):
            _put_ci(r3, key, centred_ci(est, b[:, col] if len(b) else [], n3))
        r3.update({
            "residual_rms_log": _f(a3.residual_rms_log),
            "n_points": a3.n_points,
            "n_bootstrap": len(b),
            "flops_per_token": "6N (C = 6ND maps compute to N and D)",
            "bootstrap": [[float(f"{v:.8g}") for v in row] for row in b],
        })
    out["setup"] = res.setup
    out["sensitivity"] = [{k: (_f(v) if k in ("a", "b") else v) for k, v in row.items()} for row in res.sensitivity]
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


def _ci_text(ci, fmt="{:.3f}", reason=None):
    if ci:
        return f"[{fmt.format(ci[0])}, {fmt.format(ci[1])}]"
    return f"interval unavailable ({reason})" if reason else "n/a"


def _cit(d: dict, key: str, fmt="{:.3f}"):
    """The interval d[key] as text, or `interval unavailable (<reason>)`."""
    return _ci_text(d.get(key), fmt, d.get(key + "_unavailable"))


def report_markdown(d: dict, figure_names: list[str]) -> str:
    L = ["# IsoFLOP fit", ""]
    L.append(f"Inputs: {', '.join(f'`{p}`' for p in d['inputs'])}; {d['n_points']} runs; FLOP convention **{d['convention']}**; "
             f"loss: {d['loss']}; {d['n_bootstrap']} bootstrap resamples (seed {d['seed']}).")
    L.append(f"Minima: parabola in ln N over {d['window']}.")
    L += ["", "## Exponents", "", f"N_opt = k_N·C^a, D_opt = k_D·C^b; intervals: {CI_METHOD}.", "",
          "| approach | a | a 95% CI | b | b 95% CI | k_N | k_D |", "|---|---|---|---|---|---|---|"]
    rows = [("2: IsoFLOP profiles", d)] if d.get("primary", "approach2") == "approach2" else []
    if d["approach1"]:
        rows.append(("1: envelope of training curves", d["approach1"]))
    if d["approach3"]:
        rows.append(("3: parametric L(N, D)", d["approach3"]))
    for name, r in rows:
        L.append(f"| {name} | {_num(r['a'])} | {_cit(r, 'a_ci')} | {_num(r['b'])} | {_cit(r, 'b_ci')} | "
                 f"{_num(r['k_N'], '{:.3g}')} | {_num(r['k_D'], '{:.3g}')} |")
    L += ["", f"a + b = {d['a_plus_b']:.3f} (Approach 2)."]
    if not d["approach1"]:
        L.append("Approach 1 needs training curves (metrics.jsonl in run directories); none were given.")
    if d["approach3"]:
        r = d["approach3"]
        L.append(f"Approach 3: L(N, D) = {r['E']:.4g} + {r['A']:.4g}/N^{r['alpha']:.3f} + {r['B']:.4g}/D^{r['beta']:.3f} "
                 f"(α 95% CI {_cit(r, 'alpha_ci')}, β {_cit(r, 'beta_ci')}; Huber on log loss, L-BFGS, {r['n_bootstrap']} resamples).")
    if d.get("sensitivity"):
        L += ["", "## Sensitivity to the FLOP convention and the parameter count", "",
              "Approach 2's a and b (point estimates, same window and budgets) with FLOPs and N read under each "
              "convention and parameter count the runs record. The fit above is the row marked **fit**.", "",
              "| FLOPs | N | a | b | budgets used | |", "|---|---|---|---|---|---|"]
        fit_pk = "non_embedding" if d["convention"] == "6N_nonembed" else "total"
        for r in d["sensitivity"]:
            mark = "**fit**" if (r["convention"], r["params"]) == (d["convention"], fit_pk) else r.get("note", "")
            L.append(f"| {r['convention']} | {r['params']} | {_num(r['a'])} | {_num(r['b'])} | {r['budgets_used']} | {mark} |")
        spread = [r["a"] for r in d["sensitivity"] if r["a"] is not None]
        if len(spread) > 1:
            L.append(f"\na ranges over {max(spread) - min(spread):.3f} ({min(spread):.3f}-{max(spread):.3f}) across these counts.")
    elif d.get("sensitivity") == []:
        L += ["", "Sensitivity to the FLOP convention and parameter count needs run directories (a CSV holds one convention)."]
    if d.get("setup"):
        st = d["setup"]
        L += ["", "## Training setup of the sweep", "",
              f"Read from the config.yaml of {st['n_runs']} run(s); `analysis plan` trains it. Overrides from "
              f"`python -m train`'s defaults ({st['how']}):", "", "```", " ".join(st["overrides"]) or "(none)", "```"]
    L += ["", "## Figures", ""]
    captions = {"isoflop": "IsoFLOP profiles: loss against model size per budget, fitted parabolas and minima",
                "scaling": "Compute-optimal N and D against compute, fitted power laws, 95% bands and extrapolation",
                "approach1": "Approach 1: training curves, their lower envelope, and N_opt from it"}
    for name in figure_names:
        L += [f"![{captions.get(name, name)}]({name}.png)", "", f"*{captions.get(name, name)}* ([SVG]({name}.svg))", ""]
    L += ["## IsoFLOP minima", "",
          "| budget C | C at optimum | N_opt | N_opt 95% CI | D_opt | loss_opt | curvature d²L/d(ln N)² | points (window) | window N | position in sizes | resamples used | flag | used |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for m in d["budgets"]:
        n, D = _num(m["N_opt"], "{:.3g}"), _num(m["D_opt"], "{:.3g}")
        lo, cv = _num(m["loss_opt"], "{:.4f}"), _num(m["curvature"], "{:.4f}")
        flag = m.get("reason") or ("weak curvature" if m.get("weak_curvature") else "")
        if m.get("fallback_first_pass"):
            flag = (flag + "; " if flag else "") + "first-pass window (re-centred vertex left its window)"
        wN = m.get("window_N") or [None, None]
        L.append(f"| {m['budget']:.3g} | {_num(m['C'], '{:.3g}')} | {n} | {_cit(m, 'N_opt_ci', '{:.3g}')} | {D} | {lo} | {cv} | "
                 f"{m['n_points']} ({m['n_window']}) | {_num(wN[0], '{:.3g}')}-{_num(wN[1], '{:.3g}')} | {_num(m.get('position'), '{:.2f}')} | "
                 f"{m.get('n_bootstrap_used', 0)}/{d['n_bootstrap']} | {flag or '-'} | {'yes' if m['used'] else 'no'} |")
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
    figs = []
    if res.approach2.budgets:  # an IsoFLOP table (else Approach 3 alone, and no minima to draw)
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
    n_used = (d.get("bootstrap_check") or {}).get("n_used", d["n_bootstrap"])
    usable = f" ({n_used} usable for the lines)" if d["n_bootstrap"] and n_used < d["n_bootstrap"] else ""
    lines = [f"fit: {d['n_points']} runs, {len(d['budgets'])} budgets ({used} used), convention {d['convention']}, "
             f"{d['n_bootstrap']} bootstrap resamples{usable}"]
    if d["warnings"]:
        lines.append(f"{len(d['warnings'])} warning(s), listed above and in {paths['report']}")
    for name, key in (("Approach 1", "approach1"), ("Approach 3", "approach3")):
        if d[key]:
            r = d[key]
            lines.append(f"{name}: a = {_num(r['a'])} {_cit(r, 'a_ci')}, b = {_num(r['b'])} {_cit(r, 'b_ci')}")
    lines.append(f"wrote {paths['fit']}, {paths['minima']}, {paths['report']}")
    name = "Approach 2" if d.get("primary", "approach2") == "approach2" else "Approach 3 (not an IsoFLOP table)"
    lines.append(f"{name}: a = {d['a']:.3f} {_cit(d, 'a_ci')}, b = {d['b']:.3f} {_cit(d, 'b_ci')} (95% CI; N_opt ∝ C^a, D_opt ∝ C^b)")
    lines.append("figures: " + " ".join(p for p in paths["figures"] if p.endswith(".png")))
    return "\n".join(lines)
