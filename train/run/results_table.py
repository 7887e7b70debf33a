"""The results table (contract schema: flops, params, tokens, loss, ...) and run states, rebuilt from run
directories. It is the step after the run directory in the data flow: sweeps write it, analysis reads it.

Run directories are the source of truth; results.csv is derived from them, so rebuilding it after
every run is idempotent and safe when several runs finish at once (a file lock serialises writers).
"""
from __future__ import annotations

import csv
import fcntl
import io
import json
from contextlib import contextmanager
from pathlib import Path

from train.run.checkpoint import list_checkpoints
from train.logs import get_logger
from train.run.rundir import atomic_write_bytes, read_result, run_is_locked

RESULT_COLUMNS = ["flops", "params", "tokens", "loss", "budget", "run_id", "status", "convention",
                  "non_embedding_params", "train_loss", "wall_s", "run_dir", "epochs", "bpb"]


def run_state(run_dir: Path) -> str:
    """completed | diverged | failed | running (another live process holds its lock) |
    partial (checkpoint, no result) | new."""
    result = read_result(run_dir)
    if result is not None:
        return result["status"]
    if run_is_locked(run_dir):
        return "running"
    return "partial" if list_checkpoints(run_dir) else "new"


@contextmanager
def locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(path.suffix + ".lock"), "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _planned(run_dir: Path) -> dict:
    """The run's plan.json (written before training starts), or {} when absent."""
    try:
        return json.loads((run_dir / "plan.json").read_text())
    except (OSError, ValueError):
        return {}


def result_row(run_dir: Path, result: dict, sweep_dir: Path) -> dict:
    """One results-table row. A failed run's result.json records only its status and reason: its
    size, budget and FLOPs come from its plan.json, and its loss stays empty."""
    plan = _planned(run_dir)
    convention = result.get("convention") or plan.get("convention") or "6N"
    params = result.get("params") or plan.get("params") or {}
    flops = result.get("flops") or plan.get("achieved_flops_by_convention") or {}
    return {
        "flops": flops.get(convention), "params": params.get("total"),
        "tokens": result.get("tokens", plan.get("tokens")), "loss": result.get("final_val_loss"),
        "budget": result.get("budget_flops", plan.get("budget_flops")),
        "run_id": result.get("run_id", plan.get("run_id")), "status": result["status"], "convention": convention,
        "non_embedding_params": params.get("non_embedding"),
        "train_loss": result.get("final_train_loss"), "wall_s": result.get("wall_s"),
        "run_dir": str(run_dir.relative_to(sweep_dir)),
        "epochs": result.get("epochs"),
        "bpb": result.get("final_val_bpb"),
    }


def collect_rows(sweep_dir: Path) -> list[dict]:
    """One row per run directory with a result.json, ordered by budget and size."""
    rows = []
    for result_path in sorted((sweep_dir / "runs").glob("*/result.json")):
        result = read_result(result_path.parent)
        if result is not None:
            rows.append(result_row(result_path.parent, result, sweep_dir))
    return sorted(rows, key=lambda r: (r["budget"] or 0, r["params"] or 0, r["run_id"] or ""))


def read_results_csv(path: Path) -> list[dict]:
    """The rows of a results table, numbers as floats (None where empty)."""
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    numeric = ("flops", "params", "tokens", "loss", "budget", "non_embedding_params", "train_loss", "wall_s", "epochs", "bpb")
    for row in rows:
        for key in numeric:
            if key in row:
                row[key] = float(row[key]) if row[key] not in ("", None) else None
    return rows


def update_results_csv(sweep_dir: Path) -> None:
    """write_results_csv as a run ends. In-sweep, a failed write (a full disk) must not mask the run's
    own outcome: it warns, and the next run's update (or a re-run) rebuilds the table."""
    try:
        write_results_csv(sweep_dir)
    except OSError as error:
        get_logger("sweep").warning(f"{Path(sweep_dir) / 'results.csv'} not updated: {error}")


def write_results_csv(sweep_dir: Path) -> Path:
    path = Path(sweep_dir) / "results.csv"
    with locked(path):
        for stale in path.parent.glob(f".{path.name}.*.tmp"):  # every writer holds the lock: a crash's
            stale.unlink(missing_ok=True)
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=RESULT_COLUMNS)
        writer.writeheader()
        for row in collect_rows(Path(sweep_dir)):
            writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
        atomic_write_bytes(path, buffer.getvalue().encode())
    return path
