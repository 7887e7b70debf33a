"""Kill anywhere: SIGKILL at 13 named points, one after another on the same run, each followed
by a re-run of the same command; the run ends equal, bit for bit, to one never interrupted.

The run is launched as a sweep job would launch it by itself (`sweep.name`, `sweep.out_dir`), so
that every process also rebuilds the sweep's results.csv and the CSV writes can be killed too.
The process kills itself with SIGKILL through ISOFLOP_FAULT (train/run/faults.py): no handler, no
`finally`, no flush runs, as when a node dies. After each kill the test checks what a reader of
the directory would see: result.json absent or whole, every checkpoint loadable, results.csv
absent or a whole table. The next process in the chain is the re-run, and resumes from the
checkpoint that the kill left (asserted through its "resuming from step" line).
"""
from __future__ import annotations

import csv
import signal

import pytest

from tests.reliability.helpers import STEPS, assert_nothing_torn, metrics, result, same_result, train

# (fault point, where the process that it kills starts: 0 = from scratch, k = resumes from step
# k, "done" = finds the run finished). Each process is the re-run after the previous kill.
CHAIN = [
    ("config-write", 0),      # config.yaml's temp file half written
    ("step:3", 0),            # inside step 3: gradients computed, optimizer step not taken
    ("metrics:5", 0),         # half of metrics.jsonl's row 5 written: a torn last line
    ("ckpt-write:1", 0),      # the first checkpoint's (step 7) temp file half written
    ("ckpt-rename:1", 0),     # step 7's checkpoint complete and fsynced, not yet renamed
    ("eval:10", 0),           # inside the validation pass of step 10 (checkpoint 7 on disk)
    ("metrics-write:1", 7),   # resuming: metrics.jsonl being rewritten without rows past step 7
    ("step:12", 7),           # inside step 12, after a resume
    ("ckpt-prune:2", 7),      # checkpoint 21 renamed into place, 7 and 14 not yet pruned
    ("result-write", 21),     # result.json's temp file half written (final checkpoint on disk)
    ("result-rename", 42),    # result.json complete and fsynced, not yet renamed
    ("csv-write", 42),        # the sweep's results.csv temp file half written
    ("csv-rename", "done"),   # results.csv complete, not yet renamed; the run itself had finished
]


@pytest.mark.timeout(600)
def test_sigkill_at_every_point_then_rerun_is_bit_exact(tmp_path, reference):
    sweep_dir = tmp_path / "sweep"
    run_dir = sweep_dir / "runs" / "micro"
    args = (f"out_dir={run_dir}", "sweep.name=kill", f"sweep.out_dir={sweep_dir}")
    previous = None
    for point, start in CHAIN:
        proc = train(*args, fault=point)
        where = f"killed at {point}:\n{proc.stdout[-1500:]}\n{proc.stderr[-1500:]}"
        if previous == "metrics:5":  # the re-run after the torn append skips that line, with a warning
            assert "metrics.jsonl:5: truncated or corrupt line skipped" in proc.stderr, where
        previous = point
        assert proc.returncode == -signal.SIGKILL, where
        assert f"fault injected: {point.split(':')[0]}" in proc.stderr, where
        if start == "done":
            assert "nothing to do" in proc.stdout, where
        elif start:
            assert f"resuming from step {start}/{STEPS}" in proc.stdout, where
        else:
            assert "resuming" not in proc.stdout, where
        assert_nothing_torn(run_dir, sweep_dir)
        if point == "metrics:5":  # the torn line is on disk; the re-run must skip it with a warning
            assert not (run_dir / "metrics.jsonl").read_text().endswith("\n")
        if point == "ckpt-prune:2":
            assert sorted(p.name for p in (run_dir / "checkpoints").glob("step-*.pt")) == [
                "step-00000007.pt", "step-00000014.pt", "step-00000021.pt"]
        if point in ("result-rename", "csv-write", "csv-rename"):
            assert (point == "result-rename") != (run_dir / "result.json").exists()

    final = train(*args)
    assert final.returncode == 0, final.stderr[-3000:]
    assert "nothing to do" in final.stdout
    same_result(run_dir, reference)
    steps = [row["step"] for row in metrics(run_dir)]
    assert steps == list(range(1, STEPS + 1)), "every step logged exactly once"
    with open(sweep_dir / "results.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 1 and rows[0]["status"] == "completed"
    assert float(rows[0]["loss"]) == result(reference)["final_val_loss"]
    # The temp files that the kills left were removed by the re-runs that held the locks.
    assert not list(sweep_dir.rglob("*.tmp")), list(sweep_dir.rglob("*.tmp"))
    # Only the last two checkpoints are kept.
    assert sorted(p.name for p in (run_dir / "checkpoints").glob("step-*.pt")) == [
        "step-00000035.pt", "step-00000042.pt"]
