"""The IsoFLOP sweeper: plan the grid, skip finished runs, launch the rest, summarise.

Hydra calls `sweep(arguments)` with the command line's overrides; every job gets those plus its
own point's `model.params`, `budget.flops` and `out_dir`. Any Hydra launcher runs the jobs:
sequential (basic), our GPU pool, or submitit on SLURM.
"""
from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any, List

from hydra.core.utils import JobStatus
from hydra.plugins.sweeper import Sweeper
from omegaconf import DictConfig

from sweeps.estimate import detect_device_kind, effective_flops_per_s
from sweeps.grid import GridError, GridPoint, build_grid, sweep_dir_of
from sweeps.plan_table import format_table, plan_rows, plan_warnings
from sweeps.results import run_state, write_results_csv
from train.errors import USER_ERRORS
from train.rundir import atomic_write_bytes, atomic_write_json

FINISHED = ("completed", "diverged")


def say(message: str = "") -> None:
    print(message, flush=True)


def corpus_unique_tokens(cfg) -> int | None:
    """Training tokens of the configured corpus (prepares and caches it, as the runs would)."""
    from train.data import DataConfig, prepare_data
    return prepare_data(DataConfig.from_any(cfg.data)).n_train_tokens


class IsoflopSweeper(Sweeper):
    def __init__(self) -> None:
        super().__init__()
        self.config: DictConfig | None = None
        self.launcher = None

    def setup(self, *, hydra_context, task_function, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: List[str]) -> Any:
        cfg = self.config
        try:
            points = build_grid(cfg)
            sweep_dir = sweep_dir_of(cfg)
            unique_tokens = corpus_unique_tokens(cfg)
        except (GridError, *USER_ERRORS) as error:
            print(f"error: {error}", file=sys.stderr)
            sys.exit(2)
        states = {p.plan.run_id: run_state(sweep_dir / "runs" / p.label) for p in points}
        rows = plan_rows(points, effective_flops_per_s(detect_device_kind(cfg.device), cfg.sweep.effective_tflops),
                         states)
        table = format_table(rows)
        say(f"sweep {cfg.sweep.name}: {sweep_dir}")
        say(table)
        for warning in plan_warnings(rows, unique_tokens, cfg.budget.min_steps):
            say(f"warning: {warning}")
        if cfg.dry_run:
            say("dry run: nothing trained")
            return []

        sweep_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(sweep_dir / "plan.txt", (table + "\n").encode())
        atomic_write_json(sweep_dir / "plan.json", {"points": [p.plan.to_dict() | {"label": p.label} for p in points]})
        pending = [p for p in points if states[p.plan.run_id] not in FINISHED]
        skipped = len(points) - len(pending)
        if not pending:
            write_results_csv(sweep_dir)
            say(f"nothing to train: all {len(points)} runs have finished; results in {sweep_dir / 'results.csv'}")
            return []
        say(f"launching {len(pending)} runs ({skipped} finished and skipped, "
            f"{sum(states[p.plan.run_id] == 'partial' for p in pending)} to resume)")
        job_overrides = [list(arguments) + p.overrides(sweep_dir) + [f"sweep.out_dir={sweep_dir}"] for p in pending]
        returns = self.launcher.launch(job_overrides, initial_job_idx=0)
        return [self._summarise(points, pending, returns, states, sweep_dir)]

    def _summarise(self, points: list[GridPoint], pending: list[GridPoint], returns, before: dict, sweep_dir: Path):
        after = {p.plan.run_id: run_state(sweep_dir / "runs" / p.label) for p in points}
        counts = Counter()
        for point in points:
            run_id = point.plan.run_id
            if before[run_id] in FINISHED:
                counts["skipped"] += 1
            elif after[run_id] == "completed":
                counts["resumed" if before[run_id] == "partial" else "completed"] += 1
            else:
                counts[after[run_id] if after[run_id] in ("diverged", "failed") else "failed"] += 1
        crashed = [r for r in returns if getattr(r, "status", None) == JobStatus.FAILED]
        for job in crashed:
            say(f"warning: job {job.overrides} raised {job._return_value!r}")
        csv_path = write_results_csv(sweep_dir)
        summary = {k: counts.get(k, 0) for k in ("completed", "skipped", "resumed", "failed", "diverged")}
        atomic_write_json(sweep_dir / "summary.json", summary)
        say("summary: " + ", ".join(f"{k} {v}" for k, v in summary.items()) + f"; results in {csv_path}")
        return json.dumps(summary)
