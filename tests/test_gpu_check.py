"""scripts/gpu_check.sh --cpu: every step of the GPU check runs at tiny sizes, and OUT_DIR holds
what the GPU run will hand back (the summary table with a row and a status per step, the JSON
lines, the logs, the sweep, its fit.json and the tarball)."""
import json
import os
import subprocess
import sys
import tarfile

import pytest

from tests.conftest import REPO

STEPS = ["setup", "tests", "bench", "memory", "sweep", "fit"]
# tests: no test is marked gpu yet, or they skip without CUDA; memory: partial until a memory
# model exists; fit: partial when a budget's minimum falls at an edge of its sizes.
ALLOWED = {"setup": {"ok"}, "tests": {"ok", "skipped"}, "bench": {"ok"}, "memory": {"ok", "partial"},
           "sweep": {"ok"}, "fit": {"ok", "partial"}}


def gpu_check(*args: str, timeout: float) -> subprocess.CompletedProcess:
    env = os.environ | {"PYTHON": sys.executable}  # the suite's interpreter, not whatever python3 is
    return subprocess.run(["bash", str(REPO / "scripts" / "gpu_check.sh"), *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout, env=env)


@pytest.mark.slow
def test_cpu_mode_runs_every_step_and_writes_the_summary(tmp_path):
    out = tmp_path / "gc"
    proc = gpu_check("--cpu", str(out), timeout=1500)
    assert proc.returncode in (0, 1), proc.stdout[-3000:] + proc.stderr[-3000:]

    steps = [json.loads(line) for line in (out / "steps.jsonl").read_text().splitlines()]
    assert [s["step"] for s in steps] == STEPS
    for s in steps:
        assert s["status"] in ALLOWED[s["step"]], (s, proc.stdout[-3000:])
    assert proc.returncode == (0 if all(s["status"] in ("ok", "skipped") for s in steps) else 1)

    summary = (out / "summary.md").read_text()
    assert "# GPU check (cpu mode)" in summary
    for s in steps:  # one row per step, with its status
        assert f"| {s['step']} | {s['status']} |" in summary
    assert "## MFU and tokens/s" in summary and "## Sweep" in summary and "## Fit" in summary

    bench = [json.loads(line) for line in (out / "bench.jsonl").read_text().splitlines()]
    assert [r["size"] for r in bench[:-1]] == ["3e4", "6e4"] and bench[-1]["summary"] is True
    assert all(r["ours_tokens_per_s"] > 0 and r["hf_tokens_per_s"] > 0 for r in bench[:-1])
    memory = [json.loads(line) for line in (out / "memory.jsonl").read_text().splitlines()]
    assert [r["size"] for r in memory] == ["3e5", "1e6"] and all(r["measured_gb"] > 0 for r in memory)

    results = (out / "sweep" / "results.csv").read_text().splitlines()
    assert len(results) == 1 + 6 and all(",completed," in row for row in results[1:])
    fit = json.loads((out / "fit" / "fit.json").read_text())
    assert fit  # the analysis wrote its fit
    for step in STEPS[1:]:
        assert (out / "logs" / f"{step}.log").stat().st_size > 0

    with tarfile.open(out / "gpu_check.tar.gz") as tar:
        names = tar.getnames()
    assert "gc/summary.md" in names and "gc/fit/fit.json" in names and "gc/bench.jsonl" in names
    assert not any("/checkpoints/" in name for name in names)


@pytest.mark.parametrize("args, message", [
    (["--steps", "bench,nope"], "error: --steps: unknown step 'nope'; choose from tests, bench, memory, sweep, fit"),
    (["--time-box", "sweep=soon"], "error: --time-box: expected STEP=SECONDS with STEP one of tests, bench, memory, "
                                   "sweep, fit and SECONDS > 0, got 'sweep=soon'"),
])
def test_bad_options_are_one_line_errors(tmp_path, args, message):
    proc = gpu_check("--cpu", str(tmp_path / "gc"), *args, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [message]
    assert not (tmp_path / "gc" / "summary.md").exists()


def test_a_failed_step_and_a_step_past_its_time_box_are_recorded_and_the_check_goes_on(tmp_path):
    """The sweep is stopped by a 2-second time box; the fit after it still runs (and fails: no results)."""
    out = tmp_path / "gc"
    proc = gpu_check("--cpu", str(out), "--steps", "sweep,fit", "--time-box", "sweep=2", timeout=300)
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    steps = {s["step"]: s for s in map(json.loads, (out / "steps.jsonl").read_text().splitlines())}
    assert list(steps) == ["setup", "sweep", "fit"]
    assert steps["sweep"]["status"] == "timeout" and steps["sweep"]["seconds"] < 60
    assert steps["fit"]["status"] == "failed" and steps["fit"]["note"]
    summary = (out / "summary.md").read_text()
    assert "| sweep | timeout |" in summary and "| fit | failed |" in summary
    assert "time box reached" in (out / "logs" / "sweep.log").read_text()
    assert not (out / "fit" / "fit.json").exists()
