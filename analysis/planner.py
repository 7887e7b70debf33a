"""Budget planning from fit.json: C → (N_opt, D_opt), and the inverses N → C and D → C.

Point values come from the fitted lines (k·C^e); the 95% intervals from evaluating each
bootstrap line that fit.json keeps, so they widen with extrapolation as they should. The
predicted loss uses Approach 3's L(N, D) at the planned N and D, where fit.json has it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import numpy as np

from .errors import AnalysisError
from .fitjson import load_fit  # noqa: F401  (re-exported: planner.load_fit)
from .powerlaw import centred_ci

CATALOG_TOLERANCE = 0.15  # use a named catalog model when its size is within 15% of N_opt
DEFAULT_VOCAB = 50304


def _centred(point, samples, n_requested, unavailable, log=True):
    """(interval, reason): centred on the plan's point value (powerlaw.centred_ci), or the reason
    the fit's own interval is unavailable."""
    if unavailable:
        return None, unavailable
    return centred_ci(point, samples, n_requested, log=log)


def hydra_number(x: float) -> str:
    """1e21 rather than 1e+21: a float literal for a Hydra override, 4 significant figures."""
    mant, _, exp = f"{x:.4g}".partition("e")
    return mant if not exp else f"{mant}e{int(exp)}"


def train_command(N: float, C: float, convention: str, vocab_size: int = DEFAULT_VOCAB) -> str:
    """`python -m train ...` for the catalog model nearest N (within 15%), else a shape-rule model.

    train.plan.shapes.nearest_catalog_name returns None when no catalog entry is within the
    tolerance. It is pure Python (no torch); without it the plan falls back to model.params."""
    name = None
    try:
        from train.plan.shapes import CATALOG, nearest_catalog_name

        name = nearest_catalog_name(N, vocab_size=vocab_size, tolerance=CATALOG_TOLERANCE)
        if name not in CATALOG:
            name = None
    except Exception:  # train/ absent or changed: the shape rule still builds any N
        name = None
    model = f"model={name}" if name else f"model.params={int(float(f'{N:.3g}'))}"
    return f"python -m train {model} budget.flops={hydra_number(C)} budget.convention={convention}"


@dataclass
class Plan:
    given: str  # flops | params | tokens
    convention: str
    C: float
    N_opt: float
    D_opt: float
    tokens_per_param: float
    C_ci: list | None
    N_opt_ci: list | None
    D_opt_ci: list | None
    tokens_per_param_ci: list | None
    loss: float | None  # Approach 3 at (N_opt, D_opt)
    loss_ci: list | None
    ci_unavailable: dict  # interval name -> why it is unavailable
    approach3_N_opt: float | None  # Approach 3's own allocation at C
    approach3_D_opt: float | None
    extrapolation_dex: float  # decades of C beyond the fitted budgets (0 inside)
    command: str
    notes: list
    trains: dict | None = None  # what the command trains (shape rule's N, tokens, steps), when train/ is here
    loss_unit: str = "nats per token"  # what the fit's loss is: nats per token, or bits per byte (--loss bpb)


def setup_command(setup: dict, N: float, C: float, convention: str) -> tuple[str, dict | None, list]:
    """The command that trains the sweep's own setup at budget C with N parameters, and what it
    trains: the shape rule's model for N and its tokens (train.plan.make_plan), when Hydra and
    train/ are importable. The size asked for is one the shape rule reaches, or the plan says so."""
    from .setup import command, compose

    notes = []
    ov = list(setup.get("overrides", []))
    train_conv = (setup.get("config") or {}).get("budget.convention", convention)
    if train_conv != convention:
        notes.append(f"the sweep trained under budget.convention={train_conv}; the command counts C under {convention}, the fit's")
    ov = [o for o in ov if not o.startswith("budget.convention=")]
    run_ov = [f"model.params={int(float(f'{N:.3g}'))}", f"budget.flops={hydra_number(C)}", f"budget.convention={convention}"]
    if convention == "6N":
        run_ov.pop()  # 6N is the default: keep the command short
        if train_conv != "6N":
            run_ov.append("budget.convention=6N")
    trains = None
    try:
        from train.plan import make_plan as train_plan

        cfg = compose(ov + run_ov)
        rp = train_plan(cfg)
        trains = {"params": rp.params.total, "non_embedding": rp.params.non_embedding, "tokens": rp.budget.tokens,
                  "steps": rp.budget.steps, "batch_tokens": rp.budget.batch_tokens, "shape": rp.shape.to_dict()}
        miss = trains["params"] / N - 1
        if abs(miss) > 0.10:
            notes.append(f"the shape rule builds {trains['params']:.4g} parameters for N = {N:.4g} ({miss:+.0%})")
    except ImportError:
        notes.append("train/ or Hydra is not importable here: the command is not checked against the shape rule")
    except Exception as e:  # ConfigError, ShapeError, Hydra errors: the plan says why
        notes.append(f"python -m train would refuse this plan: {str(e).splitlines()[0]}")
    if not setup.get("verified", False):
        notes.append(f"the setup's overrides were not checked by composing them ({setup.get('how', '')})")
    return command(ov + run_ov), trains, notes

def make_plan(fit: dict, flops=None, params=None, tokens=None, vocab_size: int = DEFAULT_VOCAB) -> Plan:
    given = [k for k, v in (("flops", flops), ("params", params), ("tokens", tokens)) if v is not None]
    if len(given) != 1:
        raise AnalysisError("give exactly one of --flops, --params, --tokens")
    value = float({"flops": flops, "params": params, "tokens": tokens}[given[0]])
    if not (np.isfinite(value) and value > 0):
        raise AnalysisError(f"--{given[0]} must be a positive number, got {value}")
    a, b, lkN, lkD = fit["a"], fit["b"], np.log10(fit["k_N"]), np.log10(fit["k_D"])
    bs = fit.get("bootstrap") or {}
    sa, skN, sb, skD = (np.asarray(bs.get(k, []), dtype=float) for k in ("a", "log10_k_N", "b", "log10_k_D"))
    lv = np.log10(value)
    # log10 C for the point estimate and for each bootstrap line
    if given[0] == "flops":
        lC, slC = lv, np.full(len(sa), lv)
    elif given[0] == "params":
        lC, slC = (lv - lkN) / a, (lv - skN) / sa
    else:
        lC, slC = (lv - lkD) / b, (lv - skD) / sb
    C = 10**lC
    N, D = 10 ** (lkN + a * lC), 10 ** (lkD + b * lC)
    sN, sD = 10 ** (skN + sa * slC), 10 ** (skD + sb * slC)
    if given[0] == "params":
        N, sN = value, np.full(len(sa), value)
    if given[0] == "tokens":
        D, sD = value, np.full(len(sa), value)

    notes = []
    n_req = int(fit.get("n_bootstrap") or len(sa))
    why = fit.get("a_ci_unavailable") if fit.get("a_ci") is None else None
    if fit.get("a_ci") is None and not why:
        why = "the fit has no bootstrap"
    cis, unavailable = {}, {}
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        for name, point, samples, skip in (
            ("C_ci", C, 10**slC, given[0] == "flops"),
            ("N_opt_ci", N, sN, given[0] == "params"),
            ("D_opt_ci", D, sD, given[0] == "tokens"),
            ("tokens_per_param_ci", D / N, sD / sN, False),
        ):
            if skip:
                cis[name] = None
                continue
            cis[name], r = _centred(point, samples, n_req, why)
            if r:
                unavailable[name] = r
    loss = loss_ci = N3 = D3 = None
    a3 = fit.get("approach3")
    if a3:
        from .approach3 import optimal_allocation, predict_loss

        p = [a3["E"], a3["A"], a3["B"], a3["alpha"], a3["beta"]]
        loss = float(predict_loss(p, N, D))
        boot = np.asarray(a3.get("bootstrap") or [], dtype=float).reshape(-1, 5)
        why3 = a3.get("a_ci_unavailable") if a3.get("a_ci") is None else None
        loss_ci, r = _centred(loss, predict_loss(boot, N, D) if len(boot) else [],
                              int(a3.get("n_bootstrap") or len(boot)), why3, log=False)
        if r:
            unavailable["loss_ci"] = r
        rms = a3.get("residual_rms_log")
        if loss_ci is not None and isinstance(rms, (int, float)) and np.isfinite(rms) and rms > 0 and loss > 0:
            # a prediction interval for one run: the law's own uncertainty (bootstrap) and the
            # scatter of the sweep's runs about it (run-to-run noise, misfit), in quadrature, in log
            lo_h, hi_h = np.log(loss / loss_ci[0]), np.log(loss_ci[1] / loss)
            noise = 1.96 * rms
            loss_ci = [float(loss * np.exp(-np.hypot(lo_h, noise))), float(loss * np.exp(np.hypot(hi_h, noise)))]
            notes.append(f"loss interval: Approach 3's bootstrap interval and the runs' scatter about the law "
                         f"(RMS {rms:.3g} in log loss), a prediction interval for one run")
        N3, D3 = (float(v) for v in optimal_allocation(p, C))
    Cs = [m["C"] for m in fit.get("budgets", []) if m.get("used")]
    extra = 0.0
    if Cs:
        extra = max(0.0, lC - np.log10(max(Cs)), np.log10(min(Cs)) - lC)
        if extra > 0:
            notes.append(f"extrapolating {extra:.1f} decades of compute beyond the fitted budgets "
                         f"({min(Cs):.3g}-{max(Cs):.3g} FLOPs)")
    if fit.get("warnings"):
        notes.append(f"the fit carries {len(fit['warnings'])} warning(s); read them in its report.md")
    if not (0 < a < 1 and 0 < b < 1):
        notes.append(f"a = {a:.3g}, b = {b:.3g}: outside (0, 1), so this plan means little")
    conv = fit["convention"]
    if conv == "6N_nonembed":
        notes.append("under 6N_nonembed, N counts non-embedding parameters")
    trains = None
    if fit.get("setup"):
        command, trains, more = setup_command(fit["setup"], N, C, conv)
        notes += more
    else:
        command = train_command(N, C, conv, vocab_size)
        notes.append("fit.json records no training setup (CSV input, or runs without config.yaml): the command "
                     "uses python -m train's defaults; add the sweep's settings by hand")
        if " model=" in command:
            notes.append(f"catalog model sizes assume a vocabulary of {vocab_size} (--vocab-size)")
    return Plan(
        given=given[0], convention=conv, C=float(C), N_opt=float(N), D_opt=float(D), tokens_per_param=float(D / N),
        C_ci=cis["C_ci"], N_opt_ci=cis["N_opt_ci"], D_opt_ci=cis["D_opt_ci"],
        tokens_per_param_ci=cis["tokens_per_param_ci"],
        loss=loss, loss_ci=loss_ci, ci_unavailable=unavailable, approach3_N_opt=N3, approach3_D_opt=D3,
        extrapolation_dex=float(extra),
        command=command, notes=notes, trains=trains,
        loss_unit="bits per byte" if fit.get("loss") == "bpb" else "nats per token",
    )


def _ci(ci, fmt="{:.3g}", reason=None):
    if ci:
        return f"  95% CI [{fmt.format(ci[0])}, {fmt.format(ci[1])}]"
    return f"  interval unavailable ({reason})" if reason else ""


def plan_text(p: Plan, fit_path: str) -> str:
    u = p.ci_unavailable
    L = [f"plan from {fit_path} (Approach 2, convention {p.convention}), given {p.given}"]
    L.append(f"  compute C          = {p.C:.4g} FLOPs{_ci(p.C_ci, reason=u.get('C_ci'))}")
    L.append(f"  model size N_opt   = {p.N_opt:.4g} parameters{_ci(p.N_opt_ci, reason=u.get('N_opt_ci'))}")
    L.append(f"  data D_opt         = {p.D_opt:.4g} tokens{_ci(p.D_opt_ci, reason=u.get('D_opt_ci'))}")
    L.append(f"  tokens per param   = {p.tokens_per_param:.3g}{_ci(p.tokens_per_param_ci, reason=u.get('tokens_per_param_ci'))}")
    if p.loss is not None:
        L.append(f"  predicted loss     = {p.loss:.4f} (Approach 3 at N_opt, D_opt; {p.loss_unit}){_ci(p.loss_ci, '{:.4f}', u.get('loss_ci'))}")
        L.append(f"  Approach 3 instead: N = {p.approach3_N_opt:.4g}, D = {p.approach3_D_opt:.4g} at this C")
    L += [f"  note: {n}" for n in p.notes]
    if p.trains:
        t = p.trains
        L.append(f"  trains             = {t['params']:.4g} parameters (shape rule: d_model {t['shape']['d_model']}, "
                 f"{t['shape']['n_layer']} layers), {t['tokens']:.4g} tokens in {t['steps']} steps")
    L.append(f"train: {p.command}")
    return "\n".join(L)


def plan_json(p: Plan) -> str:
    return json.dumps(asdict(p), indent=1)
