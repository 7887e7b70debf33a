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

from .conventions import CONVENTIONS, params_key
from .errors import AnalysisError
from .setup import read_setup
from .table import REQUIRED, Curve, Points


def load(paths, convention: str, loss: str = "val", curves: bool = True) -> tuple[Points, list[str]]:
    """All rows from `paths` as one table, plus notes (str) about what was read or skipped."""
    parts, notes = [], []
    for path in paths:
        if os.path.isdir(path):
            p = _load_dir(path, convention, loss, curves, notes)
        elif os.path.isfile(path):
            _csv_loss(path, loss)
            p = load_csv(path, convention, notes, loss_column="bpb" if loss == "bpb" else "loss")
        else:
            raise AnalysisError(f"{path}: no such file or directory")
        parts.append(p)
    pts = Points.concat(parts)
    pts = _dedupe(pts, notes)
    if len(pts) == 0:
        raise AnalysisError(f"no rows found in {', '.join(map(str, paths))}")
    return pts, notes


def _csv_loss(path: str, loss: str) -> None:
    if loss == "bpb":
        with open(path, newline="") as f:
            header = [h.strip() for h in (next(csv.reader(f), None) or [])]
        if "bpb" not in header:
            raise AnalysisError(f"{path}: --loss bpb needs a `bpb` column (results tables of sweeps have one); "
                                "this table has none, so fit its `loss` (drop --loss bpb)")
    if loss == "train":
        raise AnalysisError(
            f"{path}: --loss train applies to run directories (result.json holds both losses); a CSV has one "
            "`loss` column, so drop --loss train"
        )


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


def load_csv(path: str, convention: str, notes: list[str], loss_column: str = "loss") -> Points:
    """A results table; `loss_column` is what is fitted as the loss (`bpb`: bits per byte)."""
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
    cols["loss"] = [_number(r.get(loss_column)) for r, _ in rows]
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
            _csv_loss(csv_path, loss)
            return load_csv(csv_path, convention, notes, loss_column="bpb" if loss == "bpb" else "loss")
        raise AnalysisError(f"{path}: no result.json under it and no results.csv in it")
    recs = [_read_result(d, convention, loss) for d in run_dirs]
    cols = {k: [r[k] for r in recs] for k in recs[0] if k != "alt"}
    pts = Points.from_columns(cols, run_dirs)
    pts.alt = {k: (np.array([r["alt"][k][0] for r in recs]), np.array([r["alt"][k][1] for r in recs]))
               for k in recs[0]["alt"]}
    pts.setups = {d: read_setup(d) for d in run_dirs}
    if curves:
        for d, r in zip(run_dirs, recs):
            c = read_curve(d, "val_bpb" if loss == "bpb" else "val_loss") if r["status"] == "completed" else None
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
    if loss == "bpb":
        value = _number(r.get("final_val_bpb"))
        if not math.isfinite(value) and r.get("status") == "completed":
            raise AnalysisError(f"{fn}: no final_val_bpb (the run predates bits per byte); fit it with --loss val")
    alt = {(c, pk): (_number(flops.get(c)), _number(params.get(pk))) for c in CONVENTIONS for pk in ("total", "non_embedding")}
    return {
        "alt": alt,
        "flops": _number(flops.get(convention)),
        "params": _number(params.get(params_key(convention))),
        "tokens": _number(r.get("tokens")),
        "loss": value,
        "budget": _number(r.get("budget_flops")),
        "budget_ref": budget_ref,
        "status": str(r.get("status", "")),
        "run_id": str(r.get("run_id", "") or ""),
    }


def read_curve(run_dir: str, key: str = "val_loss") -> Curve | None:
    """Loss against tokens from metrics.jsonl: `key` (val_loss, or val_bpb) where logged at ≥3 steps,
    else, for val_loss, train_loss (in nats: no fallback for bits per byte)."""
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
            v, tr = _number(row.get(key)), _number(row.get("train_loss"))
            if math.isfinite(v):
                tv.append(t), lv.append(v)
            if math.isfinite(tr):
                tt.append(t), lt.append(tr)
    if len(tv) >= 3:
        return Curve(np.array(tv), np.array(lv), key)
    if len(tt) >= 3 and key == "val_loss":
        return Curve(np.array(tt), np.array(lt), "train_loss")
    return None
