"""Reading fit.json back: every key `plan` (or anything else) relies on is checked for its type
and shape, and a bad one is a one-line error that names it."""

from __future__ import annotations

import json
import math
import os

from .conventions import CONVENTIONS
from .errors import AnalysisError

FIT_JSON_VERSION = 2  # 1: the first; 2: *_ci_unavailable, budget reasons, setup, sensitivity


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _desc(v) -> str:
    text = json.dumps(v)
    return f"{type(v).__name__} {text[:40]}{'...' if len(text) > 40 else ''}"


def validate_fit(fit, path: str = "fit.json") -> dict:
    """Raise AnalysisError naming the first bad key; return `fit` unchanged when it is sound."""

    def bad(key, what, v):
        raise AnalysisError(f"{path}: key {key!r} {what}, got {_desc(v)}; refit with `python -m analysis fit`")

    if not isinstance(fit, dict):
        bad("(top level)", "must be a JSON object", fit)
    version = fit.get("version")
    if not (isinstance(version, int) and not isinstance(version, bool) and version >= 1):
        bad("version", "must be a positive integer", version)
    if version > FIT_JSON_VERSION:
        raise AnalysisError(f"{path}: fit.json version {version} is newer than this analysis reads "
                            f"({FIT_JSON_VERSION}); update the analysis package")
    for key in ("a", "b"):
        if not _is_num(fit.get(key)):
            bad(key, "must be a finite number", fit.get(key))
    for key in ("k_N", "k_D"):
        if not (_is_num(fit.get(key)) and fit[key] > 0):
            bad(key, "must be a positive finite number", fit.get(key))
    if fit.get("convention") not in CONVENTIONS:
        bad("convention", f"must be one of {', '.join(CONVENTIONS)}", fit.get("convention"))
    for key in ("a_ci", "b_ci", "k_N_ci", "k_D_ci"):
        v = fit.get(key)
        if v is not None and not (isinstance(v, list) and len(v) == 2 and all(_is_num(x) for x in v) and v[0] <= v[1]):
            bad(key, "must be null or [low, high], two finite numbers", v)
    nb = fit.get("n_bootstrap", 0)
    if not (isinstance(nb, int) and not isinstance(nb, bool) and nb >= 0):
        bad("n_bootstrap", "must be a non-negative integer", nb)
    bs = fit.get("bootstrap")
    if bs is not None:
        if not isinstance(bs, dict):
            bad("bootstrap", "must be an object of lists", bs)
        lengths = set()
        for k in ("a", "log10_k_N", "b", "log10_k_D"):
            v = bs.get(k, [])
            if not (isinstance(v, list) and all(_is_num(x) for x in v)):
                bad(f"bootstrap.{k}", "must be a list of finite numbers", v)
            lengths.add(len(v))
        if len(lengths) > 1:
            raise AnalysisError(f"{path}: key 'bootstrap' is ragged: its lists a, log10_k_N, b, log10_k_D have lengths "
                                f"{', '.join(str(len(bs.get(k, []))) for k in ('a', 'log10_k_N', 'b', 'log10_k_D'))}; "
                                "refit with `python -m analysis fit`")
    budgets = fit.get("budgets", [])
    if not isinstance(budgets, list):
        bad("budgets", "must be a list", budgets)
    for i, m in enumerate(budgets):
        if not isinstance(m, dict):
            bad(f"budgets[{i}]", "must be an object", m)
        if m.get("C") is not None and not (_is_num(m["C"]) and m["C"] > 0):
            bad(f"budgets[{i}].C", "must be a positive number or null", m["C"])
        if not isinstance(m.get("used", False), bool):
            bad(f"budgets[{i}].used", "must be true or false", m.get("used"))
    for key in ("warnings", "notes"):
        v = fit.get(key, [])
        if not (isinstance(v, list) and all(isinstance(x, str) for x in v)):
            bad(key, "must be a list of strings", v)
    a3 = fit.get("approach3")
    if a3 is not None:
        if not isinstance(a3, dict):
            bad("approach3", "must be null or an object", a3)
        for k in ("E", "A", "B", "alpha", "beta"):
            if not _is_num(a3.get(k)):
                bad(f"approach3.{k}", "must be a finite number (a partial Approach 3 block cannot be used)", a3.get(k))
        for k in ("A", "B"):
            if a3[k] <= 0:
                bad(f"approach3.{k}", "must be positive", a3[k])
        boot = a3.get("bootstrap", [])
        if not (isinstance(boot, list) and all(isinstance(r, list) and len(r) == 5 and all(_is_num(x) for x in r) for r in boot)):
            bad("approach3.bootstrap", "must be a list of [E, A, B, alpha, beta] rows of finite numbers", boot)
        rms = a3.get("residual_rms_log")
        if rms is not None and not (_is_num(rms) and rms >= 0):
            bad("approach3.residual_rms_log", "must be null or a non-negative number", rms)
        n3 = a3.get("n_bootstrap", 0)
        if not (isinstance(n3, int) and not isinstance(n3, bool) and n3 >= 0):
            bad("approach3.n_bootstrap", "must be a non-negative integer", n3)
    setup = fit.get("setup")
    if setup is not None:
        if not isinstance(setup, dict):
            bad("setup", "must be null or an object", setup)
        ov = setup.get("overrides", [])
        if not (isinstance(ov, list) and all(isinstance(x, str) for x in ov)):
            bad("setup.overrides", "must be a list of strings", ov)
        cfg = setup.get("config", {})
        if not isinstance(cfg, dict):
            bad("setup.config", "must be an object", cfg)
    return fit


def load_fit(path: str) -> dict:
    """fit.json (or the directory holding it), validated."""
    if os.path.isdir(path):
        path = os.path.join(path, "fit.json")
    try:
        with open(path) as f:
            fit = json.load(f)
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise AnalysisError(f"{path}: cannot read a fit ({e})") from None
    return validate_fit(fit, path)
