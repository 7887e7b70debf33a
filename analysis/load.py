"""Read results: CSV files in the results-table schema, run directories, or sweep directories.

- A CSV needs the columns flops, params, tokens, loss; budget, run_id, status and convention
  are optional. A CSV holds one convention's FLOPs: a `convention` column says which, otherwise
  the one asked for is assumed. Rows of other conventions (a long table) are skipped.
- A run directory holds result.json (and metrics.jsonl); a sweep directory holds many, found
  recursively. Run directories are the source of truth, so a sweep's results.csv is read only
  when no result.json exists under it. Under convention X, FLOPs come from result.json
  flops[X], and N is params.non_embedding for 6N_nonembed and params.total otherwise.
"""

from __future__ import annotations

import csv
import json
import math
import os

import numpy as np

from .conventions import params_key
from .errors import AnalysisError
from .table import REQUIRED, Curve, Points


def load(paths, convention: str, loss: str = "val", curves: bool = True) -> tuple[Points, list[str]]:
    """All rows from `paths` as one table, plus notes (str) about what was read or skipped."""
    parts, notes = [], []
    for path in paths:
        if os.path.isdir(path):
            p = _load_dir(path, convention, loss, curves, notes)
        elif os.path.isfile(path):
            p = load_csv(path, convention, notes)
        else:
            raise AnalysisError(f"{path}: no such file or directory")
        parts.append(p)
    pts = Points.concat(parts)
    pts = _dedupe(pts, notes)
    if len(pts) == 0:
        raise AnalysisError(f"no rows found in {', '.join(map(str, paths))}")
    return pts, notes


def _dedupe(pts: Points, notes: list[str]) -> Points:
    seen, keep = set(), np.ones(len(pts), bool)
    for i, rid in enumerate(pts.run_id):
        if rid:
            if rid in seen:
                keep[i] = False
            seen.add(rid)
    if not keep.all():
        notes.append(f"{(~keep).sum()} duplicate run_id rows ignored (first kept): {sorted(set(pts.run_id[~keep]))[:5]}")
    return pts.subset(keep)


def _number(s) -> float:
    try:
        return float(s)
    except (TypeError, ValueError):
        return math.nan


def load_csv(path: str, convention: str, notes: list[str]) -> Points:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        header = [h.strip() for h in (reader.fieldnames or [])]
        missing = [c for c in REQUIRED if c not in header]
        if missing:
            raise AnalysisError(
                f"{path}: missing column(s) {', '.join(missing)}; the results table needs "
                f"{', '.join(REQUIRED)} (found: {', '.join(header) or 'no header'})"
            )
        rows = [({(k or "").strip(): v for k, v in r.items()}, reader.line_num) for r in reader]
    if "convention" in header:
        declared = sorted({(r.get("convention") or "").strip() for r, _ in rows})
        kept = [(r, ln) for r, ln in rows if (r.get("convention") or "").strip() == convention]
        if not kept:
            raise AnalysisError(
                f"{path}: its FLOPs are under convention {', '.join(declared)}, not {convention}; a CSV "
                f"cannot be refitted under another convention (pass --convention {declared[0]}, or the run "
                f"directories, whose result.json records every convention)"
            )
        if len(kept) < len(rows):
            notes.append(f"{path}: kept the {len(kept)} rows under {convention} of {len(rows)} ({', '.join(declared)})")
        rows = kept
    cols = {c: [_number(r.get(c)) for r, _ in rows] for c in (*REQUIRED, "budget")}
    cols["status"] = [(r.get("status") or "").strip() for r, _ in rows]
    cols["run_id"] = [(r.get("run_id") or "").strip() for r, _ in rows]
    return Points.from_columns(cols, [f"{path}:{ln}" for _, ln in rows])


def _load_dir(path: str, convention: str, loss: str, curves: bool, notes: list[str]) -> Points:
    run_dirs, unfinished = [], []
    for root, dirs, files in os.walk(path):
        dirs.sort()
        if "result.json" in files:
            if not _is_wsd_trunk(root):  # a WSD sweep's trunk (sweeps/wsd.py) is no (C, N) point; its branches are
                run_dirs.append(root)
        elif "metrics.jsonl" in files:
            unfinished.append(root)
    if unfinished:
        notes.append(f"{len(unfinished)} run(s) without result.json (still running or killed) left out, e.g. {unfinished[0]}")
    if not run_dirs:
        csv_path = os.path.join(path, "results.csv")
        if os.path.isfile(csv_path):
            return load_csv(csv_path, convention, notes)
        raise AnalysisError(f"{path}: no result.json under it and no results.csv in it")
    recs = [_read_result(d, convention, loss) for d in run_dirs]
    cols = {k: [r[k] for r in recs] for k in recs[0]}
    pts = Points.from_columns(cols, run_dirs)
    if curves:
        for d, r in zip(run_dirs, recs):
            c = read_curve(d) if r["status"] == "completed" else None
            if c is not None:
                pts.curves[r["run_id"] or d] = c
    return pts


def _is_wsd_trunk(run_dir: str) -> bool:
    try:
        with open(os.path.join(run_dir, "result.json")) as f:
            return json.load(f).get("role") == "trunk"
    except (OSError, ValueError, AttributeError):
        return False


def _read_result(run_dir: str, convention: str, loss: str) -> dict:
    """One row from result.json; missing or malformed keys become NaN and fail validation."""
    fn = os.path.join(run_dir, "result.json")
    try:
        with open(fn) as f:
            r = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise AnalysisError(f"{fn}: cannot read ({e})") from None
    params = r.get("params") if isinstance(r.get("params"), dict) else {}
    flops = r.get("flops") if isinstance(r.get("flops"), dict) else {}
    # the budget was set under the run's own convention; refitting under another moves its FLOPs
    # away from the budget (embeddings are most of a tiny model), so the check uses the run's own
    budget_ref = _number(flops.get(r.get("convention"))) if isinstance(r.get("convention"), str) else math.nan
    val, train = _number(r.get("final_val_loss")), _number(r.get("final_train_loss"))
    value = val if (loss == "val" and math.isfinite(val)) else train
    return {
        "flops": _number(flops.get(convention)),
        "params": _number(params.get(params_key(convention))),
        "tokens": _number(r.get("tokens")),
        "loss": value,
        "budget": _number(r.get("budget_flops")),
        "budget_ref": budget_ref,
        "status": str(r.get("status", "")),
        "run_id": str(r.get("run_id", "") or ""),
    }


def read_curve(run_dir: str) -> Curve | None:
    """Loss against tokens from metrics.jsonl: val_loss where logged at ≥3 steps, else train_loss."""
    fn = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.isfile(fn):
        return None
    tv, lv, tt, lt = [], [], [], []
    with open(fn) as f:
        for line in f:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a torn last line of an append-only log
            t = _number(row.get("tokens"))
            if not t > 0:
                continue
            v, tr = _number(row.get("val_loss")), _number(row.get("train_loss"))
            if math.isfinite(v):
                tv.append(t), lv.append(v)
            if math.isfinite(tr):
                tt.append(t), lt.append(tr)
    if len(tv) >= 3:
        return Curve(np.array(tv), np.array(lv), "val_loss")
    if len(tt) >= 3:
        return Curve(np.array(tt), np.array(lt), "train_loss")
    return None
