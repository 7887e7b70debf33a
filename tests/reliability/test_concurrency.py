"""Concurrency: two identical sweeps started at once on one sweep directory train every run
exactly once, and results.csv stays a valid table. A run directory's lock is an flock held by
the training process; a lock left by a dead process is stale and is taken over.
"""
from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys

from tests.conftest import REPO, run_cli
from tests.reliability.helpers import ENV, MICRO
from train.run.rundir import RunLock, RunLocked, run_is_locked

SWEEP = ["sweep=demo", "sweep.budgets=[1e10]", "sweep.sizes_per_budget=3", "sweep.span=4", "sweep.tokens_per_param=2",
         "model.seq_len=64", "optim.batch_tokens=1024", "eval_tokens=2048", "checkpoint_every=10", "wandb.mode=disabled"]


def test_two_sweeps_on_one_directory_train_each_run_once(tmp_path, demo_corpus):
    sweep_dir = tmp_path / "sweep"
    env = os.environ | ENV | {"ISOFLOP_FAULT": "step:*:sleep0.03"}  # runs of 1-3 s, so that the two overlap
    procs, logs = [], []
    try:
        for name in ("a", "b"):
            logs.append(tmp_path / f"{name}.log")
            with open(logs[-1], "w") as out:
                procs.append(subprocess.Popen([sys.executable, "-m", "sweeps", *SWEEP, f"sweep.out_dir={sweep_dir}"],
                                              cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT))
        for proc in procs:
            proc.wait(timeout=300)
    finally:  # a sweep that hangs must not load the tests after this one
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    out = [log.read_text() for log in logs]
    assert [p.returncode for p in procs] == [0, 0], "\n-----\n".join(o[-3000:] for o in out)

    runs = sorted(d for d in (sweep_dir / "runs").iterdir() if d.is_dir())
    assert len(runs) == 3
    both = "\n".join(out)
    for run_dir in runs:
        res = json.loads((run_dir / "result.json").read_text())
        assert res["status"] == "completed"
        # trained once: one start line over both sweeps, no resume, every step logged once
        starts = re.findall(rf"run {res['run_id']}: [\d,]+ params", both)
        assert len(starts) == 1, f"{run_dir.name} started {len(starts)} times"
        assert f"run {res['run_id']}: resuming" not in both
        steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        assert steps == list(range(1, res["steps"] + 1))
        assert not run_is_locked(run_dir), "the lock went with its process"
    # they meet in one of two ways, by timing: the later sweep finds a run's lock taken while it plans the
    # grid (and skips that run), or a run it launched finds the lock taken when it starts
    met = re.search(r"warning: \d+ runs? (is|are) being trained by another process|locked by another process", both)
    assert met, "the two sweeps never met on a run:\n" + both[-3000:]
    with open(sweep_dir / "results.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 3 and all(r["status"] == "completed" and float(r["loss"]) > 0 for r in rows)
    assert not list(sweep_dir.glob(".results.csv.*.tmp"))
    # the sweep's metadata comes from one command: plan.json was rewritten with summary.json by the
    # sweep that finished last, under the metadata lock; the config identity was recorded once
    plan = json.loads((sweep_dir / "plan.json").read_text())["points"]
    summary = json.loads((sweep_dir / "summary.json").read_text())
    assert len(plan) == summary["points"] == 3 and sorted(p["label"] for p in plan) == [r.name for r in runs]
    assert json.loads((sweep_dir / "sweep_config.json").read_text())["identity"]["model.seq_len"] == 64


def test_lock_names_its_holder_and_a_dead_holders_lock_is_taken_over(tmp_path):
    run_dir = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom train.run.rundir import RunLock\n"
         f"lock = RunLock({str(run_dir)!r})\nlock.acquire()\nprint('locked', flush=True)\ntime.sleep(120)"],
        cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert run_is_locked(run_dir)
        try:
            RunLock(run_dir).acquire()
            raise AssertionError("a second lock was granted")
        except RunLocked as error:
            assert f"pid {holder.pid} on " in str(error)
        # `python -m train` on a directory that another process trains: one line, exit 4
        proc = run_cli("-m", "train", *MICRO, f"out_dir={run_dir}", env=ENV)
        assert proc.returncode == 4, proc.stderr[-2000:]
        assert proc.stderr.strip().splitlines()[-1].startswith(f"error: out_dir: {run_dir}: locked by another "
                                                               f"process (pid {holder.pid} on ")
        assert not (run_dir / "result.json").exists()
    finally:
        holder.send_signal(signal.SIGKILL)  # dies holding the lock: the .lock file stays, stale
        holder.wait()
    assert (run_dir / ".lock").read_text().startswith('{"pid": %d' % holder.pid)
    assert not run_is_locked(run_dir)
    lock = RunLock(run_dir)
    lock.acquire()  # taken over at once: the kernel dropped the dead process's flock
    assert f"pid {os.getpid()} on " in lock.holder()
    lock.release()


def test_a_status_probe_does_not_turn_a_starting_trainer_away(tmp_path):
    """`run_is_locked` (a sweep planning its grid) takes a shared lock for an instant; a trainer's
    acquire that lands in that instant retries instead of reporting the run as taken."""
    import fcntl
    import threading

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    probe = open(run_dir / ".lock", "a+")
    fcntl.flock(probe, fcntl.LOCK_SH | fcntl.LOCK_NB)  # the probe's lock, as run_is_locked takes it
    threading.Timer(0.15, lambda: fcntl.flock(probe, fcntl.LOCK_UN)).start()
    lock = RunLock(run_dir)
    lock.acquire()  # granted once the probe lets go, within the retries
    try:
        assert f"pid {os.getpid()} on " in lock.holder()
        assert run_is_locked(run_dir)
    finally:
        lock.release()
        probe.close()
