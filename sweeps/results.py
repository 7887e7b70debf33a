"""The sweep's results table (contract schema) and status bookkeeping, rebuilt from run directories.

Run directories are the source of truth; results.csv is derived from them, so rebuilding it after
every run is idempotent and safe when several runs finish at once (a file lock serialises writers).
"""
from __future__ import annotations

import csv
import fcntl
import io
from contextlib import contextmanager
from pathlib import Path

from train.checkpoint import list_checkpoints
from train.rundir import atomic_write_bytes, read_result

RESULT_COLUMNS = ["flops", "params", "tokens", "loss", "budget", "run_id", "status", "convention",
                  "non_embedding_params", "train_loss", "wall_s", "run_dir"]


def run_state(run_dir: Path) -> str:
    """completed | diverged | failed | partial (checkpoint, no result) | new."""
    result = read_result(run_dir)
    if result is not None:
        return result["status"]
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


def collect_rows(sweep_dir: Path) -> list[dict]:
    rows = []
    for result_path in sorted((sweep_dir / "runs").glob("*/result.json")):
        result = read_result(result_path.parent)
        if result is None:
            continue
        convention = result.get("convention", "6N")
        rows.append({
            "flops": result["flops"][convention], "params": result["params"]["total"],
            "tokens": result["tokens"], "loss": result["final_val_loss"], "budget": result["budget_flops"],
            "run_id": result["run_id"], "status": result["status"], "convention": convention,
            "non_embedding_params": result["params"]["non_embedding"],
            "train_loss": result["final_train_loss"], "wall_s": result["wall_s"],
            "run_dir": str(result_path.parent.relative_to(sweep_dir)),
        })
    return sorted(rows, key=lambda r: (r["budget"], r["params"]))


def write_results_csv(sweep_dir: Path) -> Path:
    path = Path(sweep_dir) / "results.csv"
    with locked(path):
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=RESULT_COLUMNS)
        writer.writeheader()
        for row in collect_rows(Path(sweep_dir)):
            writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
        atomic_write_bytes(path, buffer.getvalue().encode())
    return path
