"""IsoFLOP sweeps end to end, as a user runs them: `python -m sweeps ...` in a subprocess.

One tiny real sweep (2 budgets x 3 sizes of ~10^4-parameter models, a few seconds per run) is
shared by the module: it is SIGKILLed once a run has finished and another has checkpointed, then
re-run to completion. The tests read what that left behind (results.csv, plan, summary, run
directories), re-run it again, break one of its runs, and refine it, each on a copy where they
change it.
"""
from __future__ import annotations

import csv
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sweeps.refine import find_edges
from tests.conftest import REPO, run_cli

# The demo preset made tiny: sizes near the smallest shape the rule can build, budgets of 1e10
# and 2e10 FLOPs, batches of 1024 tokens. Few tokens per parameter (tokens_per_param=2) puts
# every budget's best loss at its smallest size, an edge minimum that refinement can extend.
TINY = ["sweep=demo", "sweep.budgets=[1e10,2e10]", "sweep.sizes_per_budget=3", "sweep.span=4",
        "sweep.tokens_per_param=2", "model.seq_len=64", "optim.batch_tokens=1024", "eval_tokens=4096",
        "checkpoint_every=10", "wandb.mode=disabled"]
N_POINTS = 6
# Tests share this 2-core machine with other jobs; several torch processes that each spin two
# OpenMP threads slow each other down about tenfold, so every run here uses one thread.
ENV = {"OMP_NUM_THREADS": "1"}
CONTRACT_COLUMNS = ["flops", "params", "tokens", "loss", "budget", "run_id", "status", "convention"]


def sweep_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return run_cli("-m", "sweeps", *args, timeout=timeout, env=ENV)


def tiny(sweep_dir: Path, *extra: str) -> list[str]:
    return [*TINY, f"sweep.out_dir={sweep_dir}", *extra]


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def results_by_label(sweep_dir: Path) -> dict[str, dict]:
    return {d.name: json.loads((d / "result.json").read_text())
            for d in sorted((sweep_dir / "runs").iterdir()) if (d / "result.json").is_file()}


def plan_labels(sweep_dir: Path) -> list[str]:
    return [p["label"] for p in json.loads((sweep_dir / "plan.json").read_text())["points"]]


def copy_sweep(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".hydra"))
    return dst


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """The tiny sweep: started, SIGKILLed mid-run, re-run to completion. Returns what happened."""
    sweep_dir = tmp_path_factory.mktemp("sweep") / "tiny"
    log = sweep_dir.parent / "first.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "sweeps", *tiny(sweep_dir)], cwd=REPO, stdout=out,
                                stderr=subprocess.STDOUT, env=os.environ | ENV, start_new_session=True)
    runs = sweep_dir / "runs"
    done, started = [], []
    deadline = time.time() + 150
    try:
        while time.time() < deadline and proc.poll() is None:
            dirs = sorted(runs.iterdir()) if runs.is_dir() else []
            done = [d.name for d in dirs if (d / "result.json").exists()]
            started = [d.name for d in dirs if not (d / "result.json").exists()
                       and any((d / "checkpoints").glob("step-*.pt"))]
            if done and started:
                os.killpg(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert done and started, f"the sweep was not caught mid-run (finished {done}, checkpointed {started}):\n" \
                             + log.read_text()[-3000:]
    killed = {"done": done, "started": started,
              "mtimes": {name: (runs / name / "result.json").stat().st_mtime_ns for name in done},
              "unfinished": sorted(d.name for d in runs.iterdir() if not (d / "result.json").exists())}
    began = time.time()
    resumed = sweep_cli(*tiny(sweep_dir))
    return {"dir": sweep_dir, "killed": killed, "resume": resumed, "resume_s": time.time() - began}


# --- the plan before the spend ----------------------------------------------------------------

def test_dry_run_prints_the_plan_and_trains_nothing(tmp_path, demo_corpus):
    sweep_dir = tmp_path / "dry"
    # demo_corpus: the plan counts the corpus's unique tokens; tokenizing it is not the plan's time
    began = time.time()
    proc = sweep_cli(*tiny(sweep_dir, "dry_run=true"))
    elapsed = time.time() - began
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    header = next(line for line in out.splitlines() if "budget C" in line)
    for column in ("budget C", "params N", "shape", "tokens D", "D/N", "steps", "est."):
        assert column in header
    rows = [line for line in out.splitlines() if line.strip().startswith(("1e+10", "2e+10"))]
    assert len(rows) == N_POINTS, out
    for row in rows:
        shape = row.split()[2]
        assert "x" in shape and all(part.isdigit() for part in shape.split("x")), row
    assert f"{N_POINTS} runs over 2 budgets; estimated training time" in out
    assert "dry run: nothing trained" in out
    assert not sweep_dir.exists(), "a dry run wrote the sweep directory"
    assert elapsed < 20, f"the dry run took {elapsed:.1f}s"


# --- a real sweep, killed and resumed -------------------------------------------------------

def test_killed_sweep_resumes_exactly_the_missing_runs(finished):
    resume, killed, sweep_dir = finished["resume"], finished["killed"], finished["dir"]
    assert resume.returncode == 0, resume.stdout[-3000:] + resume.stderr
    results = results_by_label(sweep_dir)
    assert len(results) == N_POINTS and all(r["status"] == "completed" for r in results.values())
    # the runs that had finished before the kill were not touched
    for name, mtime in killed["mtimes"].items():
        assert (sweep_dir / "runs" / name / "result.json").stat().st_mtime_ns == mtime, name
    # the interrupted run went on from its checkpoint, and only the missing runs were launched
    for name in killed["started"]:
        run_id = name.rsplit("-", 1)[1]
        assert f"run {run_id}: resuming from step " in resume.stdout
    missing = N_POINTS - len(killed["done"])
    assert f"launching {missing} runs ({len(killed['done'])} finished and skipped, " \
           f"{len(killed['started'])} to resume)" in resume.stdout
    summary = json.loads((sweep_dir / "summary.json").read_text())
    # the runs trained from step 0 here: their own wall time against their plan-table estimates
    from_scratch = missing - len(killed["started"])
    timing = {key: summary.pop(key) for key in ("trained_s", "estimated_s") if key in summary}
    assert (len(timing) == 2 and min(timing.values()) > 0) == (from_scratch > 0), timing
    assert (f"time: the {from_scratch} runs trained here from step 0 took " in resume.stdout) == (from_scratch > 0)
    assert summary == {"completed": missing - len(killed["started"]), "skipped": len(killed["done"]),
                       "resumed": len(killed["started"]), "failed": 0, "diverged": 0, "points": N_POINTS}


def test_sweep_dir_holds_plan_results_and_summary(finished):
    sweep_dir = finished["dir"]
    plan = json.loads((sweep_dir / "plan.json").read_text())["points"]
    assert len(plan) == N_POINTS
    assert "estimated training time" in (sweep_dir / "plan.txt").read_text()
    rows = read_csv(sweep_dir / "results.csv")
    header = list(rows[0])
    assert header[:len(CONTRACT_COLUMNS)] == CONTRACT_COLUMNS
    assert sorted(r["run_id"] for r in rows) == sorted(p["run_id"] for p in plan), "one row per point"
    assert {float(r["budget"]) for r in rows} == {1e10, 2e10}
    for row in rows:
        flops, params, tokens, loss = (float(row[k]) for k in ("flops", "params", "tokens", "loss"))
        assert row["status"] == "completed" and row["convention"] == "6N"
        assert flops == pytest.approx(6 * params * tokens, rel=1e-9)
        assert flops == pytest.approx(float(row["budget"]), rel=0.01)
        assert math.isfinite(loss) and 0 < loss < math.log(512) + 1
    assert len({r["params"] for r in rows if float(r["budget"]) == 1e10}) == 3


def test_rerunning_a_finished_sweep_trains_nothing(finished):
    sweep_dir = finished["dir"]
    before = {d.name: (d / "result.json").stat().st_mtime_ns for d in (sweep_dir / "runs").iterdir()}
    began = time.time()
    proc = sweep_cli(*tiny(sweep_dir))
    elapsed = time.time() - began
    assert proc.returncode == 0, proc.stderr
    assert f"nothing to train: all {N_POINTS} runs have finished" in proc.stdout
    assert "launching" not in proc.stdout
    after = {d.name: (d / "result.json").stat().st_mtime_ns for d in (sweep_dir / "runs").iterdir()}
    assert after == before
    assert json.loads((sweep_dir / "summary.json").read_text())["skipped"] == N_POINTS
    assert elapsed < 30, f"the no-op re-run took {elapsed:.1f}s"


# --- a failing run ------------------------------------------------------------------------------

def test_failed_run_does_not_stop_the_others_and_is_rerun(finished, tmp_path):
    sweep_dir = copy_sweep(finished["dir"], tmp_path / "failing")
    labels = plan_labels(sweep_dir)
    # Take two runs back to "never started": the largest size of each budget (fewest steps). The
    # first of them fails for real: its checkpoint folder is a file, so its first checkpoint
    # write raises. It comes first in the grid, so the other one runs after it fails.
    broken, other = labels[2], labels[5]
    for label in (broken, other):
        shutil.rmtree(sweep_dir / "runs" / label)
    (sweep_dir / "runs" / broken).mkdir()
    (sweep_dir / "runs" / broken / "checkpoints").write_text("not a folder")

    proc = sweep_cli(*tiny(sweep_dir))
    assert proc.returncode == 3, proc.stdout[-2000:] + proc.stderr
    assert "error: sweep: 1 runs failed" in proc.stderr
    results = results_by_label(sweep_dir)
    assert results[broken]["status"] == "failed" and "checkpoints" in results[broken]["reason"]
    assert results[other]["status"] == "completed"
    summary = json.loads((sweep_dir / "summary.json").read_text())
    assert summary.pop("estimated_s") > 0 and summary.pop("trained_s") > 0  # the one run trained from step 0
    assert summary == {"completed": 1, "skipped": 4, "resumed": 0, "failed": 1, "diverged": 0, "points": N_POINTS}
    rows = {r["run_dir"].split("/")[-1]: r for r in read_csv(sweep_dir / "results.csv")}
    assert rows[broken]["status"] == "failed" and rows[broken]["loss"] == ""
    assert float(rows[broken]["params"]) > 0, "a failed run's row still names its size"

    (sweep_dir / "runs" / broken / "checkpoints").unlink()  # the fault is fixed; run it again
    proc = sweep_cli(*tiny(sweep_dir))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr
    assert "launching 1 runs (5 finished and skipped, 0 to resume)" in proc.stdout
    assert results_by_label(sweep_dir)[broken]["status"] == "completed"
    assert json.loads((sweep_dir / "summary.json").read_text()) == {
        "completed": 1, "skipped": 5, "resumed": 0, "failed": 0, "diverged": 0, "points": N_POINTS}


# --- bad input ------------------------------------------------------------------------------

BAD_INPUT = [
    (["sweep.budgets=[]"], "error: sweep.budgets: the budget list is empty"),
    (["sweep.budgets=[1e8]"], "error: sweep.budgets: budget 1e+08"),
    (["hydra/launcher=nope"], "error: hydra/launcher: unknown launcher 'nope'; choose one of"),
    (["sweep.budget_range.start=1e10", "sweep.budget_range.stop=2e10", "sweep.budget_range.count=2"],
     "error: sweep.budgets: give either a list of budgets or sweep.budget_range, not both"),
    (["sweep.sizes_per_budget=5", "sweep.span=2"], "error: sweep.span: 2.0 is too narrow for 5 sizes"),
    (["sweep.sizez_per_budget=5"], "error: sweep.sizez_per_budget: unknown config key"),
]


@pytest.mark.parametrize("overrides, message", BAD_INPUT, ids=[b[1].split(":")[1].strip() + "-" + str(i)
                                                               for i, b in enumerate(BAD_INPUT)])
def test_bad_input_is_one_clear_line_before_training(tmp_path, overrides, message):
    sweep_dir = tmp_path / "bad"
    proc = sweep_cli(*tiny(sweep_dir, *overrides), timeout=120)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr
    assert proc.stderr.strip().startswith(message), proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not (sweep_dir / "runs").exists()


@pytest.mark.parametrize("args, message", [
    ([f"sweep.out_dir={{tmp}}", "wandb.mode=disabled"], "error: sweep: choose a preset"),
    (["refine", "{tmp}/nowhere"], "error: refine: no such sweep directory"),
])
def test_missing_sweep_or_sweep_dir(tmp_path, args, message):
    proc = sweep_cli(*[a.replace("{tmp}", str(tmp_path)) for a in args], timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith(message) and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert list(tmp_path.iterdir()) == []


# --- refinement -------------------------------------------------------------------------------

def test_find_edges_picks_budgets_with_edge_minima():
    def rows(budget, losses, status="completed"):
        return [{"budget": budget, "params": 1e4 * 2 ** i, "loss": loss, "status": status, "convention": "6N"}
                for i, loss in enumerate(losses)]
    table = (rows(1e10, [3.0, 3.2, 3.5]) + rows(2e10, [3.3, 3.1, 3.2]) + rows(4e10, [3.4, 3.2, 3.0])
             + rows(8e10, [3.0, 2.0]) + rows(8e10, [1.0, 1.0, 1.0], status="failed"))
    edges, notes = find_edges(table, [1e10, 2e10, 4e10, 8e10], "6N", ratio=2.0, count=2)
    assert [(e.budget, e.side) for e in edges] == [(1e10, "smallest"), (4e10, "largest")]
    assert edges[0].targets == pytest.approx([5e3, 2.5e3])
    assert edges[1].targets == pytest.approx([8e4, 1.6e5])
    assert notes == ["C=8e+10: 2 completed sizes; refinement needs at least 3"]
    assert find_edges(table, [1e10], "6N_nonembed", ratio=2.0, count=2)[0] == []


def test_refine_adds_sizes_beyond_edge_minima(finished, tmp_path):
    sweep_dir = copy_sweep(finished["dir"], tmp_path / "refine")
    rows = read_csv(sweep_dir / "results.csv")
    expected = {}
    for budget in (1e10, 2e10):
        sizes = sorted((float(r["params"]), float(r["loss"])) for r in rows if float(r["budget"]) == budget)
        best = min(range(len(sizes)), key=lambda i: sizes[i][1])
        if best in (0, len(sizes) - 1):
            expected[budget] = ("smallest" if best == 0 else "largest", sizes[best][0])
    assert expected, f"no budget of the tiny sweep has an edge minimum: {rows}"

    proc = sweep_cli("refine", str(sweep_dir), "dry_run=true")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line.startswith("refine: C=")]
    assert len(lines) == len(expected), proc.stdout
    for budget, (side, params) in expected.items():
        assert any(line.startswith(f"refine: C={budget:.3g}: minimum at the {side} size N={params:.3g}")
                   for line in lines), proc.stdout
    assert "dry run: nothing trained" in proc.stdout
    assert len(list((sweep_dir / "runs").iterdir())) == N_POINTS

    proc = sweep_cli("refine", str(sweep_dir))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr
    plan = json.loads((sweep_dir / "plan.json").read_text())["points"]
    extras = [p for p in plan if p["refine"]]
    assert extras, "refinement planned no extra size:\n" + proc.stdout
    results = results_by_label(sweep_dir)
    assert len(results) == N_POINTS + len(extras)
    for extra in extras:
        side, edge_params = expected[extra["budget_flops"]]
        assert results[extra["label"]]["status"] == "completed"
        beyond = extra["params"]["total"] < edge_params if side == "smallest" else extra["params"]["total"] > edge_params
        assert beyond, (extra, side, edge_params)
    assert len(read_csv(sweep_dir / "results.csv")) == N_POINTS + len(extras)
    summary = json.loads((sweep_dir / "summary.json").read_text())
    assert summary["skipped"] == N_POINTS and summary["completed"] == len(extras)

    # the original command still trains nothing: the added runs sit beside the grid's
    proc = sweep_cli(*tiny(sweep_dir))
    assert proc.returncode == 0 and "nothing to train" in proc.stdout, proc.stderr
