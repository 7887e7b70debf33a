"""Preemption: a signal makes the run stop at the next step boundary with a checkpoint, exit 75,
and the same command (or SLURM's requeue) resumes it to the uninterrupted result.

Locally the signals come from outside, as a scheduler or a person sends them (SIGTERM, then
SIGUSR1 on the resumed run). On the localhost SLURM cluster the run is a Hydra submitit_slurm
job: first `scancel --signal=USR2` (submitit's time-limit signal: our checkpoint, then submitit's
own handler pickles the job and runs `scontrol requeue`), then a real preemption by a job of the
`urgent` partition (SLURM sends SIGTERM and requeues the job itself). The job resumes twice and
its final result equals the reference bit for bit.
"""
from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.reliability.helpers import ENV, MICRO, STEPS, metrics, popen_train, result, same_result, train

SLOW = "step:*:sleep0.15"  # a slow step, so that the signal lands mid-run: the resumed run's window
# between its next checkpoint and its end is 28 steps, 4 s at this pace
EXIT_PREEMPTED = 75
STOP_BOUND_S = 10.0  # signal to exit: one step plus one checkpoint write, with room for a busy machine


def _wait_for(predicate, timeout: float, what: str, poll: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = predicate()
        if got:
            return got
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def _checkpoints(run_dir: Path) -> list[int]:
    return sorted(int(p.stem.split("-")[1]) for p in (run_dir / "checkpoints").glob("step-*.pt"))


def _signal_mid_run(run_dir: Path, sig: int, after_step: int, log: Path) -> tuple[int, float, str]:
    """Start the run, send `sig` once a checkpoint past `after_step` exists; (rc, seconds to exit, log)."""
    proc = popen_train(f"out_dir={run_dir}", fault=SLOW, log=log)
    try:
        _wait_for(lambda: any(s > after_step for s in _checkpoints(run_dir)) or proc.poll() is not None, 120,
                  f"a checkpoint past step {after_step}")
        assert proc.poll() is None, log.read_text()[-3000:]
        sent = time.monotonic()
        proc.send_signal(sig)
        rc = proc.wait(timeout=60)
        return rc, time.monotonic() - sent, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_sigterm_then_sigusr1_checkpoint_exit_75_and_resume(tmp_path, reference):
    run_dir = tmp_path / "run"

    rc, took, out = _signal_mid_run(run_dir, signal.SIGTERM, 0, tmp_path / "term.log")
    assert rc == EXIT_PREEMPTED, out[-3000:]
    stopped = int(re.search(r"SIGTERM: stopped at step (\d+)/", out).group(1))
    assert took < STOP_BOUND_S, f"took {took:.1f}s from SIGTERM to exit"
    assert stopped in _checkpoints(run_dir), "the stop saved a checkpoint at its step"
    assert not (run_dir / "result.json").exists(), "a preempted run records no result"
    assert [r["step"] for r in metrics(run_dir)] == list(range(1, stopped + 1))

    rc, took, out = _signal_mid_run(run_dir, signal.SIGUSR1, stopped, tmp_path / "usr1.log")
    assert rc == EXIT_PREEMPTED, out[-3000:]
    assert f"resuming from step {stopped}/{STEPS}" in out
    again = int(re.search(r"SIGUSR1: stopped at step (\d+)/", out).group(1))
    assert again > stopped and again in _checkpoints(run_dir) and took < STOP_BOUND_S
    assert not (run_dir / "result.json").exists()

    final = train(f"out_dir={run_dir}")
    assert final.returncode == 0, final.stderr[-3000:]
    assert f"resuming from step {again}/{STEPS}" in final.stdout
    same_result(run_dir, reference)


# --- SLURM ----------------------------------------------------------------------------------

def _job_log(submitit: Path) -> str:
    return "".join(p.read_text(errors="replace") for p in sorted(submitit.rglob("*_log.out")))


@pytest.fixture(scope="module")
def slurm_env() -> dict[str, str]:
    """The localhost cluster, started outside the test's timeout (a fresh machine installs it first)."""
    from tests.slurm_cluster import require_slurm
    return require_slurm()


@pytest.mark.slurm
@pytest.mark.timeout(400, func_only=True)
def test_slurm_usr2_requeue_and_urgent_preemption_resume(tmp_path, reference, slurm_env):
    from tests.slurm_cluster import GPUS, PARTITION, URGENT_PARTITION
    # 0.5 s steps (21 s of training): each signal has about 14 s to land after the checkpoint that the
    # test waits for, against the scheduler's 2 s pass and the requeue on a busy 2-core machine
    env = slurm_env | ENV | {"ISOFLOP_FAULT": "step:*:sleep0.5"}
    sweep_dir = tmp_path / "sweep"
    run_dir = sweep_dir / "runs" / "micro"
    submitit = sweep_dir / ".submitit"
    cmd = [sys.executable, "-m", "train", "--multirun", *MICRO, f"out_dir={run_dir}", "sweep.name=slurm",
           f"sweep.out_dir={sweep_dir}", "device=cpu", "hydra/launcher=submitit_slurm",
           f"hydra.launcher.submitit_folder={submitit}/%j", f"hydra.launcher.partition={PARTITION}",
           # every fake GPU, so that a 1-GPU job of the urgent partition must preempt this one
           f"hydra.launcher.gpus_per_node={GPUS}", "hydra.launcher.cpus_per_task=1",
           "hydra.launcher.tasks_per_node=1",
           # submitit counts a signal in the last 10 minutes of the limit as a time-out, not a preemption
           "hydra.launcher.timeout_min=60", f"hydra.sweep.dir={sweep_dir}/.hydra"]
    log = tmp_path / "client.log"
    with open(log, "w") as out:
        client = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    def job_id():
        ids = [p.name for p in submitit.glob("*") if p.is_dir() and p.name[0].isdigit()]
        return ids[0] if ids else None

    urgent, jid = None, None
    try:
        # 1. submitit's time-limit signal (USR2), sent as SLURM would before the limit
        _wait_for(lambda: _checkpoints(run_dir) or client.poll() is not None, 120, "the job's first checkpoint")
        assert client.poll() is None, log.read_text()[-3000:]
        jid = _wait_for(job_id, 30, "the job id")
        subprocess.run(["scancel", "--signal=USR2", jid], env=env, check=True)
        _wait_for(lambda: "resuming from step" in _job_log(submitit), 120, "the requeued job to resume")
        first_stop = int(re.search(r"SIGUSR2: stopped at step (\d+)/", _job_log(submitit)).group(1))

        # 2. a real preemption: a job of the urgent partition takes a GPU that this job holds
        _wait_for(lambda: any(s > first_stop for s in _checkpoints(run_dir)), 120, "a checkpoint after the resume")
        urgent = subprocess.run(["sbatch", "--parsable", f"-p{URGENT_PARTITION}", "--gres=gpu:1", "-c", "1",
                                 "-t", "1", "-o", str(tmp_path / "urgent.out"), "--wrap", "sleep 1"],
                                env=env, capture_output=True, text=True, check=True).stdout.strip()
        client.wait(timeout=300)
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
        # a job left queued would hold every fake GPU and fail the SLURM tests after this one
        for job in (urgent, jid or job_id()):
            if job:
                subprocess.run(["scancel", job], env=env, check=False)
    job_log = _job_log(submitit)
    assert client.returncode == 0, log.read_text()[-3000:] + job_log[-3000:]
    second_stop = int(re.search(r"SIGTERM: stopped at step (\d+)/", job_log).group(1))
    resumes = [int(s) for s in re.findall(r"resuming from step (\d+)/", job_log)]
    assert resumes == [first_stop, second_stop], job_log[-3000:]
    assert "Requeued job" in job_log, "submitit requeued the job after our checkpoint"
    assert result(run_dir)["status"] == "completed"
    same_result(run_dir, reference)
    print(f"SLURM: USR2 at step {first_stop} (submitit requeue), preempted at step {second_stop}, "
          f"resumed both times")
