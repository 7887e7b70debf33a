"""Shared helpers for the analysis tests (not a test module; no conftest, no __init__)."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data" / "analysis"


def read_csv(name: str) -> list[dict]:
    with open(DATA / name, newline="") as f:
        return list(csv.DictReader(f))


def write_rows(path, header, rows) -> str:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return str(path)


def run_cli(*args, timeout=120) -> subprocess.CompletedProcess:
    """`python -m analysis ARGS` in a fresh interpreter, from the repository root."""
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", MPLBACKEND="Agg")
    return subprocess.run(
        [sys.executable, "-m", "analysis", *map(str, args)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout,
    )


def points(cols: dict):
    from analysis.table import Points

    n = len(next(iter(cols.values())))
    return Points.from_columns(cols, [f"row{i}" for i in range(n)])


PORIAN_KEYS = ("hparams", "warmup", "decay", "param_count", "loss_split")


def porian_settings():
    """The five RefinedWeb settings: (key, published row, contract columns, convention)."""
    rows = read_csv("porian2024_rw_isoflop_points.csv")
    pub = [r for r in read_csv("porian2024_published_fits.csv") if r["source_file"] == "summary_df" and r["dataset"] == "rw"]
    out = []
    for p in pub:
        key = tuple(p[k] for k in PORIAN_KEYS)
        sel = [r for r in rows if tuple(r[k] for k in PORIAN_KEYS) == key]
        cols = {
            "flops": np.array([float(r["flops"]) for r in sel]),
            "params": np.array([float(r["N"]) for r in sel]),
            "tokens": np.array([float(r["D_tokens"]) for r in sel]),
            "loss": np.array([float(r["loss"]) for r in sel]),
        }
        # Porian's "kaplan" parameter count is non-embedding, with C = 6·N·D over those
        conv = "6N_nonembed" if p["param_count"] == "kaplan" else "6N"
        out.append((key, p, cols, conv))
    return out
