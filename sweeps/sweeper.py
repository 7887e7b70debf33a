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
from omegaconf import DictConfig, open_dict

from sweeps.estimate import detect_device_kind, format_seconds, throughput_for
from sweeps.identity import (METADATA_FILES, SweepDirError, check_identity, config_identity, metadata_lock,
                             restore_metadata, write_identity)
from sweeps.grid import GridError, budgets_of, GridPoint, build_grid, grid_ratio, make_point, outside_bounds, sweep_dir_of
from sweeps.plan_table import format_table, plan_rows, plan_warnings
from sweeps.refine import find_edges, save_command
from sweeps import wsd
from train.run.results_table import read_results_csv, run_state, write_results_csv
from train.errors import USER_ERRORS
from train.logs import get_logger, setup_logging
from train.run.lifecycle import check_run_settings, writable_dir
from train.run.rundir import atomic_write_bytes, atomic_write_json

FINISHED = ("completed", "diverged")


log = get_logger("sweep")


def corpus_unique_tokens(cfg) -> int | None:
    """Training tokens of the configured corpus. A real sweep prepares (and caches) it once here,
    before any run starts, and counts them. A dry run takes them from the cache when it holds the
    data, else from the data config's declared `data.unique_tokens` (nothing downloaded or
    tokenized), else prepares the data as a real sweep does."""
    from train.data import DataConfig, find_prepared, prepare_data
    data = DataConfig.from_any(cfg.data)
    if cfg.dry_run:
        cached = find_prepared(data)
        if cached is not None:
            return cached.n_train_tokens
        if data.unique_tokens is not None:
            log.info(f"data {data.name}: {data.unique_tokens:,} training tokens (declared by data.unique_tokens; "
                "not prepared yet)")
            return data.unique_tokens
    counted = prepare_data(data).n_train_tokens
    if data.unique_tokens is not None and counted < data.unique_tokens:
        log.warning(f"data.unique_tokens declares {data.unique_tokens:,} training tokens, but the prepared "
            f"data has {counted:,}; the plan uses the prepared count (correct the declaration)")
    return counted


def window_tokens(train_tokens: int | None, seq_len: int) -> int | None:
    """The unique tokens a run can draw: whole windows of seq_len (train/data/batches.py)."""
    return None if train_tokens is None else (train_tokens - 1) // seq_len * seq_len


def repeating(points: list[GridPoint], unique_tokens: int | None) -> list[GridPoint]:
    return [] if unique_tokens is None else [p for p in points if p.plan.budget.tokens > unique_tokens]


def repeat_refusal(points: list[GridPoint], unique_tokens: int | None, cfg) -> str | None:
    """With data.repeat_policy=refuse: why the plan is refused (runs that would repeat data), or None."""
    over = repeating(points, unique_tokens)
    if cfg.data.repeat_policy != "refuse" or not over:
        return None
    worst = max(over, key=lambda p: p.plan.budget.tokens)
    return (f"data.repeat_policy=refuse: {len(over)} of {len(points)} runs need more than the "
            f"{unique_tokens:,} unique training tokens of data={cfg.data.name} (up to "
            f"{worst.plan.budget.tokens / unique_tokens:.2f} epochs, at C={worst.budget:.3g} "
            f"N={worst.plan.params.total:.3g}); nothing was launched: lower the budgets, use a larger "
            "sample (data.max_documents or another data preset) or set data.repeat_policy=warn")


def embedding_warning(points: list[GridPoint], cfg) -> None:
    """One line when some runs are mostly embedding (see train.run.lifecycle.mostly_embedding)."""
    from train.run.lifecycle import mostly_embedding
    heavy = [p for p in points if mostly_embedding(p.plan, cfg)]
    if heavy:
        worst = max(heavy, key=lambda p: 1 - p.plan.params.non_embedding / p.plan.params.total)
        log.warning(f"{len(heavy)} of {len(points)} runs are mostly embedding; "
            f"{mostly_embedding(worst.plan, cfg)}")


class IsoflopSweeper(Sweeper):
    def __init__(self) -> None:
        super().__init__()
        self.config: DictConfig | None = None
        self.launcher = None
        self.failed_jobs = 0  # jobs that the launcher reports as failed (raised, or exited non-zero)
        self.waiting = 0      # WSD branches not started: no trunk checkpoint at their branch step
        self._layout = None   # a WSD sweep's trunks and branches (sweeps/wsd.py)

    def setup(self, *, hydra_context, task_function, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)

    @staticmethod
    def _unique_tokens(cfg) -> int | None:
        """The corpus's training tokens. A dry run that cannot prepare the data (a Hub dataset
        offline) still prints its plan, without the repeated-data check."""
        from train.data import DataError
        try:
            return corpus_unique_tokens(cfg)
        except DataError as error:
            if not cfg.dry_run:
                raise
            log.warning(f"data not prepared, so repeated data is not checked: {error}")
            return None

    def sweep(self, arguments: List[str]) -> Any:
        cfg = self.config
        launcher = cfg.hydra.launcher if "launcher" in cfg.get("hydra", {}) else {}
        # the ranks one run spans: the GPU pool's gpus_per_run, or SLURM tasks of one job (submitit)
        runs_on = launcher.get("gpus_per_run") or launcher.get("tasks_per_node")
        if cfg.get("world_size") is None and isinstance(runs_on, int) and runs_on > 1:
            with open_dict(cfg):
                cfg.world_size = runs_on  # plan each run's batch for the ranks the launcher starts
        try:
            setup_logging(cfg.log_level)
            check_run_settings(cfg)  # what every job would refuse, refused once, before any launch
            layout = self._layout = wsd.plan_wsd(cfg) if wsd.is_wsd(cfg) else None  # trunks and cooldown branches
            points = layout.points if layout else build_grid(cfg)
            sweep_dir = sweep_dir_of(cfg)
            if not cfg.dry_run:
                writable_dir(sweep_dir, "sweep.out_dir")
            identity = config_identity(cfg)
            check_identity(sweep_dir, identity)
            unique_tokens = window_tokens(self._unique_tokens(cfg), points[0].plan.shape.seq_len)
            flops_per_s = self._flops_per_s = throughput_for(detect_device_kind(cfg.device), cfg.sweep.effective_tflops)
            if cfg.sweep.refine and cfg.sweep.refine_sizes < 1:
                raise GridError(f"sweep.refine_sizes: must be at least 1, got {cfg.sweep.refine_sizes}")
        except (GridError, SweepDirError, *USER_ERRORS) as error:
            print(f"error: {error}", file=sys.stderr)
            sys.exit(2)
        states = self._states(points, sweep_dir)
        rows = self._rows(points, states)
        log.info(f"sweep {cfg.sweep.name}: {sweep_dir}")
        log.info(format_table(rows))
        trunk_states = {t.plan.run_id: run_state(t.run_dir(sweep_dir)) for t in layout.trunks} if layout else {}
        if layout and layout.trunks:
            log.info(wsd.trunk_table(layout, flops_per_s, trunk_states))
        total, cosine = layout.compute() if layout else (sum(p.plan.budget.achieved_flops for p in points),) * 2
        for budget in budgets_of(cfg.sweep):
            kept = sum(1 for p in points if p.budget == budget)
            if kept < cfg.sweep.sizes_per_budget:
                log.warning(f"C={budget:.3g}: {cfg.sweep.sizes_per_budget - kept} of {cfg.sweep.sizes_per_budget} "
                    f"sizes fall outside sweep.min_params/max_params; this budget needs models beyond that range")
        refusal = repeat_refusal(points, unique_tokens, cfg)
        if refusal:  # before anything is launched or written; the one line says it all
            print(f"error: {refusal}", file=sys.stderr)
            sys.exit(2)
        for warning in plan_warnings(rows, unique_tokens, cfg.budget.min_steps):
            log.warning(warning)
        embedding_warning(points, cfg)
        if cfg.dry_run and not cfg.sweep.refine:
            log.info("dry run: nothing trained")
            log.info(wsd.compute_line(total, cosine))
            return []
        log.info(wsd.compute_line(total, cosine))

        # the grid
        # "running": another process (a second sweep on this directory) holds the run's lock
        finished = ("completed",) if cfg.retry_diverged else FINISHED
        pending = [p for p in points if states[p.plan.run_id] not in finished + ("running",)]
        busy = sum(states[p.plan.run_id] == "running" for p in points)
        if busy and not cfg.dry_run:
            log.warning(f"{busy} run{'s are' if busy > 1 else ' is'} being trained by another process; "
                f"skipping {'them' if busy > 1 else 'it'} here")
        launched = 0
        if not cfg.dry_run:
            sweep_dir.mkdir(parents=True, exist_ok=True)
            with metadata_lock(sweep_dir):
                try:  # another sweep may have recorded its config since the check above
                    check_identity(sweep_dir, identity)
                except SweepDirError as error:
                    print(f"error: {error}", file=sys.stderr)
                    sys.exit(2)
                self._previous = {n: (sweep_dir / n).read_bytes() if (sweep_dir / n).is_file() else None
                                  for n in METADATA_FILES}
                write_identity(sweep_dir, identity)
                save_command(sweep_dir, list(arguments), list(cfg.hydra.overrides.hydra))
                self._write_plan(sweep_dir, points, rows, layout)
            if layout and layout.trunks:  # WSD: the trunks first, then the branches whose trunk is ready
                launched, pending = self._launch_trunks(layout, arguments, sweep_dir, pending, trunk_states)
            if pending:
                log.info(f"launching {len(pending)} runs ({len(points) - len(pending)} finished and skipped, "
                    f"{sum(states[p.plan.run_id] == 'partial' for p in pending)} to resume)")
                launched = self._launch(pending, arguments, sweep_dir, first_job=launched)
            elif not busy:
                diverged = sum(states[p.plan.run_id] == "diverged" for p in points)
                log.info(f"nothing to train: all {len(points)} runs have finished"
                    + (f" ({diverged} diverged; retry_diverged=true trains them again)" if diverged else "")
                    + f"; results in {sweep_dir / 'results.csv'}")

        # refinement beyond edge minima, from the results so far
        if cfg.sweep.refine:
            extras = self._refine(cfg, points, sweep_dir, flops_per_s, unique_tokens)
            if cfg.dry_run:
                log.info("dry run: nothing trained")
                return []
            extra_states = self._states(extras, sweep_dir)
            states |= extra_states
            points = points + extras
            with metadata_lock(sweep_dir):
                self._write_plan(sweep_dir, points, self._rows(points, states), self._layout)
            todo = [p for p in extras if extra_states[p.plan.run_id] not in finished]
            if todo:
                log.info(f"refine: launching {len(todo)} runs")
                self._launch(todo, arguments, sweep_dir, first_job=launched)
            elif extras:
                log.info(f"refine: nothing to train: all {len(extras)} added runs have finished")
        summary = self._summarise(points, states, sweep_dir, finished)
        # A run failed when its launcher job failed or its result.json says so. (Every real
        # training job that exits cleanly leaves a result; a stand-in command may not, and the
        # summary then counts its point as failed without failing the sweep.)
        final = [run_state(sweep_dir / "runs" / p.label) for p in points]
        recorded, diverged = final.count("failed"), final.count("diverged")
        waiting = self.waiting
        if self.failed_jobs or recorded or diverged or waiting:
            parts = []
            if self.failed_jobs or recorded:
                parts.append(f"{max(self.failed_jobs, recorded)} runs failed (run the same command again to retry them)")
            if waiting:
                parts.append(f"{waiting} branches not started (their trunk failed or is still training; run the same "
                             "command again)")
            if diverged:
                parts.append(f"{diverged} runs diverged (the analysis leaves them out; `retry_diverged=true` "
                             "trains them again, e.g. with another divergence_factor or LR rule)")
            print(f"error: sweep: {'; '.join(parts)}; their run directories' result.json say why", file=sys.stderr)
            sys.exit(3)
        return [json.dumps(summary)]

    @staticmethod
    def _states(points: list[GridPoint], sweep_dir: Path) -> dict[str, str]:
        return {p.plan.run_id: run_state(sweep_dir / "runs" / p.label) for p in points}

    def _rows(self, points: list[GridPoint], states: dict[str, str]) -> list[dict]:
        """The plan table's rows; a WSD branch's estimate is its cooldown (as when first planned)."""
        rows = plan_rows(points, self._flops_per_s, states)
        if self._layout:
            wsd.adjust_rows(rows, self._layout, self._flops_per_s)
        return rows

    @staticmethod
    def _write_plan(sweep_dir: Path, points: list[GridPoint], rows: list[dict], layout=None) -> None:
        atomic_write_bytes(sweep_dir / "plan.txt", (format_table(rows) + "\n").encode())
        plan = {"points": [p.plan.to_dict() | {"label": p.label, "target_params": p.target_params, "refine": p.refine}
                           | ({"trunk": layout.trunk_of[p.plan.run_id].label}
                              if layout and p.plan.run_id in layout.trunk_of else {})
                           for p in points]}
        if layout:
            plan["trunks"] = [t.plan.to_dict() | {"label": t.label, "target_params": t.target_params}
                              for t in layout.trunks]
        atomic_write_json(sweep_dir / "plan.json", plan)

    def _launch_trunks(self, layout, arguments: List[str], sweep_dir: Path, pending: list[GridPoint],
                       trunk_states: dict[str, str]) -> tuple[int, list[GridPoint]]:
        """Wave 1: the trunks not yet finished. Returns the next job number and the pending points
        that can start now: those from scratch, and branches whose trunk has their checkpoint (or
        diverged before it, which the branch records). The launchers block until a wave ends, so
        wave 2 starts only after every trunk has."""
        from train.run.checkpoint import checkpoint_path
        todo = [t for t in layout.trunks if trunk_states[t.plan.run_id] not in FINISHED + ("running",)]
        launched = 0
        if todo:
            log.info(f"launching {len(todo)} trunks ({len(layout.trunks) - len(todo)} finished or running elsewhere; "
                f"{sum(trunk_states[t.plan.run_id] == 'partial' for t in todo)} to resume)")
            launched = self._launch(todo, arguments, sweep_dir, first_job=0)
        ready, waiting = [], []
        for point in pending:
            trunk = layout.trunk_of.get(point.plan.run_id)
            if trunk is None:
                ready.append(point)
                continue
            step = point.plan.budget.steps - point.plan.schedule.cooldown_steps
            done = run_state(trunk.run_dir(sweep_dir))
            (ready if checkpoint_path(trunk.run_dir(sweep_dir), step).is_file() or done == "diverged"
             else waiting).append(point)
        for point in waiting:
            log.warning(f"C={point.budget:.3g} N={point.plan.params.total:.3g}: its trunk "
                f"{layout.trunk_of[point.plan.run_id].label} has no checkpoint at its branch step yet; not started")
        self.waiting = len(waiting)
        return launched, ready

    def _launch(self, points: list[GridPoint], arguments: List[str], sweep_dir: Path, first_job: int) -> int:
        """Run the points through the configured launcher; returns the next free job number. When
        the launcher itself fails (no cluster, a bad GPU pool), the sweep directory's metadata is
        put back as it was before this command: a command that launched nothing records nothing."""
        job_overrides = [list(arguments) + p.overrides(sweep_dir) + [f"sweep.out_dir={sweep_dir}"] for p in points]
        try:
            returns = self.launcher.launch(job_overrides, initial_job_idx=first_job)
        except (Exception, SystemExit) as error:
            if not (isinstance(error, SystemExit) and error.code in (0, None)):
                restore_metadata(sweep_dir, getattr(self, "_previous", {}))
            raise
        for job in returns or []:
            if getattr(job, "status", None) == JobStatus.FAILED:
                self.failed_jobs += 1
                where = next((o for o in reversed(job.overrides) if o.startswith("out_dir=")), job.overrides)
                log.warning(f"run {where} failed: {job._return_value!r}")
        return first_job + len(job_overrides)

    def _refine(self, cfg, points: list[GridPoint], sweep_dir: Path, flops_per_s,
                unique_tokens: int | None) -> list[GridPoint]:
        """Extra points beyond each budget's edge minimum, planned from the sweep's results table."""
        csv_path = sweep_dir / "results.csv"
        if not cfg.dry_run and sweep_dir.is_dir():
            write_results_csv(sweep_dir)
        if not csv_path.is_file():
            log.info(f"refine: no results yet in {csv_path}; train the grid first")
            return []
        edges, notes = find_edges(read_results_csv(csv_path), sorted({p.budget for p in points}),
                                  cfg.budget.convention, grid_ratio(cfg.sweep), cfg.sweep.refine_sizes)
        for note in notes:
            log.info(f"refine: {note}")
        if not edges:
            log.info("refine: every budget's minimum lies inside its sizes; nothing to add")
            return []
        known = {p.plan.run_id for p in points}
        extras = []
        for edge in edges:
            added, stopped = [], ""
            for target in edge.targets:
                bound = outside_bounds(target, cfg.sweep)
                try:
                    if bound:
                        raise GridError(f"N≈{target:.3g} is {bound}")
                    make = wsd.standalone_point if wsd.is_wsd(cfg) else make_point  # WSD: from scratch
                    point = make(cfg, edge.budget, target, refine=True)
                except GridError as error:
                    stopped = f"; cannot go further ({error})"
                    break
                if point.plan.run_id not in known:
                    known.add(point.plan.run_id)
                    added.append(point)
            sizes = ", ".join(f"{p.plan.params.total:.3g}" for p in added) or "none"
            log.info(f"refine: {edge.describe()}; adding N = {sizes}{stopped}")
            extras += added
        over = repeating(extras, unique_tokens) if cfg.data.repeat_policy == "refuse" else []
        if over:
            log.info(f"refine: not adding N = {', '.join(f'{p.plan.params.total:.3g}' for p in over)}: they need more "
                f"than the {unique_tokens:,} unique training tokens (data.repeat_policy=refuse)")
            extras = [p for p in extras if p not in over]
        if extras:
            rows = plan_rows(extras, flops_per_s, self._states(extras, sweep_dir))
            log.info(format_table(rows))
            for warning in plan_warnings(rows, unique_tokens, cfg.budget.min_steps):
                log.warning(f"{warning}")
        return extras

    def _summarise(self, points: list[GridPoint], before: dict, sweep_dir: Path, finished=FINISHED) -> dict:
        after = self._states(points, sweep_dir)
        counts = Counter()
        for point in points:
            run_id = point.plan.run_id
            if before[run_id] in finished:
                counts["skipped"] += 1
            elif after[run_id] == "completed":
                counts["resumed" if before[run_id] == "partial" else "completed"] += 1
            else:
                counts[after[run_id] if after[run_id] in ("diverged", "failed", "running") else "failed"] += 1
        csv_path = write_results_csv(sweep_dir)
        summary = {k: counts.get(k, 0) for k in ("completed", "skipped", "resumed", "failed", "diverged")}
        if counts.get("running"):  # trained by another process right now (a second sweep on this directory)
            summary["running"] = counts["running"]
        summary["points"] = len(points)
        rows = self._rows(points, after)
        timing = self._timing(points, before, after, sweep_dir, {r["run_id"]: r["est_s"] for r in rows},
                              retried="diverged" not in finished)
        if timing:
            summary["trained_s"], summary["estimated_s"] = round(timing[0], 1), round(timing[1], 1)
        # plan.json and summary.json from the same command: the last sweep to finish writes both
        with metadata_lock(sweep_dir):
            self._write_plan(sweep_dir, points, rows, self._layout)
            atomic_write_json(sweep_dir / "summary.json", summary)
        counted = {k: v for k, v in summary.items() if k not in ("points", "trained_s", "estimated_s")}
        log.info("summary: " + ", ".join(f"{k} {v}" for k, v in counted.items())
                 + f" (of {len(points)} runs); results in {csv_path}")
        if timing:
            log.info(f"time: the {timing[2]} runs trained here from step 0 took {format_seconds(timing[0])} in all, "
                     f"estimated {format_seconds(timing[1])} (x{timing[0] / timing[1]:.2f}; docs/performance.md, "
                     "\"Time estimates\", says how to calibrate the estimate for this machine)")
        return summary

    @staticmethod
    def _timing(points: list[GridPoint], before: dict, after: dict, sweep_dir: Path, estimates: dict[str, float],
                retried: bool):
        """(measured, estimated seconds, runs) over the runs trained from step 0 to completion
        during this command (new ones; diverged ones under retry_diverged), or None. A run's time
        is from its config.yaml (written as it starts) to its result.json, as the estimate was
        calibrated (scripts/calibrate_estimates.py). A second sweep on the same directory at the
        same time can finish some of them: they count here too, as in the summary's `completed`."""
        measured = estimated = 0.0
        runs = 0
        for point in points:
            run_id, run_dir = point.plan.run_id, sweep_dir / "runs" / point.label
            if after[run_id] != "completed" or not (before[run_id] == "new"
                                                     or (retried and before[run_id] == "diverged")):
                continue
            try:
                seconds = (run_dir / "result.json").stat().st_mtime - (run_dir / "config.yaml").stat().st_mtime
            except OSError:
                continue
            measured += max(seconds, 0.0)
            estimated += estimates[run_id]  # the plan table's row: a WSD branch's cooldown only
            runs += 1
        return (measured, estimated, runs) if runs else None
