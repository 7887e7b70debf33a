"""The localhost SLURM cluster really works: GPU gres, preemption/requeue, accounting, Hydra submitit_slurm.

These tests talk to real slurmctld/slurmd/slurmdbd daemons (scripts/slurm/start.sh), nothing is mocked.
They skip where the cluster cannot be started (not root, no apt) and fail on CI (CI=true).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time

import pytest

from tests import slurm_cluster
from tests.slurm_cluster import GPUS, NODE, PARTITION, URGENT_PARTITION, require_slurm

pytestmark = pytest.mark.timeout(120, func_only=True)  # the cluster's start (an install on a fresh machine) is not timed
slurm = pytest.mark.slurm


@pytest.fixture(scope="module")
def env() -> dict[str, str]:
    return require_slurm()


def _sh(env: dict[str, str], *cmd: str, timeout: float = 60) -> str:
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"{cmd} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}"
    return out.stdout


def _wait(pred, timeout: float, what: str, poll: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@slurm
def test_node_is_up_with_fake_gpus(env):
    line = _sh(env, "sinfo", "-h", "-N", "-n", NODE, "-o", "%N|%t|%G|%P")
    assert NODE in line and f"gpu:{GPUS}" in line, line
    # comp: still completing the last test's job (its epilog and cleanup), which is an up node too
    assert line.split("|")[1].strip() in {"idle", "mix", "alloc", "comp"}, line


@slurm
def test_sacct_is_real_accounting_from_slurmdbd(env, tmp_path):
    # the cluster is registered in slurmdbd's database, and sacct reads finished jobs from it
    assert "isoflop" in _sh(env, "sacctmgr", "-n", "-P", "show", "cluster", "format=cluster").split()
    ok = _sh(env, "sbatch", "--parsable", f"--output={tmp_path}/ok.out", "--wrap", "true").strip()
    bad = _sh(env, "sbatch", "--parsable", f"--output={tmp_path}/bad.out", "--wrap", "exit 3").strip()

    def states():
        out = _sh(env, "sacct", "--parsable2", "-n", "-X", "-o", "JobID,State,ExitCode", "-j", f"{ok},{bad}")
        rows = {line.split("|")[0]: line.split("|")[1:] for line in out.splitlines() if line}
        finished = all(rows.get(j, [""])[0] in ("COMPLETED", "FAILED") for j in (ok, bad))
        return rows if finished else None

    rows = _wait(states, 60, "sacct to report both jobs finished")
    assert rows[ok] == ["COMPLETED", "0:0"] and rows[bad] == ["FAILED", "3:0"], rows


@slurm
def test_gres_gpu_jobs_run_concurrently_on_distinct_gpus(env, tmp_path):
    # Two array tasks with one GPU each; each writes what it sees, then waits for the other one
    # (a barrier), so they provably overlap and must have been given different devices.
    script = tmp_path / "job.sh"
    script.write_text(
        textwrap.dedent(
            f"""\
            #!/bin/bash
            echo "$CUDA_VISIBLE_DEVICES" > {tmp_path}/cvd.$SLURM_ARRAY_TASK_ID
            for i in $(seq 1 150); do
                [ -e {tmp_path}/cvd.0 ] && [ -e {tmp_path}/cvd.1 ] && exit 0
                sleep 0.1
            done
            exit 1
            """
        )
    )
    _sh(
        env, "sbatch", "--wait", "--array=0-1", "--gres=gpu:1", "-c", "1", f"-p{PARTITION}",
        "-o", str(tmp_path / "slurm-%A_%a.out"), "-t", "2", str(script),
    )  # fmt: skip
    cvd = [(tmp_path / f"cvd.{i}").read_text().strip() for i in (0, 1)]
    assert all(c.isdigit() and 0 <= int(c) < GPUS for c in cvd), cvd
    assert cvd[0] != cvd[1], f"concurrent GPU jobs shared a device: {cvd}"


@slurm
def test_urgent_job_preempts_and_requeues(env, tmp_path):
    # A job holding every GPU in `debug` is preempted by a 1-GPU job in `urgent`
    # (PreemptMode=REQUEUE), and then runs again with SLURM_RESTART_COUNT=1.
    log = tmp_path / "low.log"
    low = _sh(
        env, "sbatch", "--parsable", f"-p{PARTITION}", f"--gres=gpu:{GPUS}", "-t", "2",
        "-o", str(tmp_path / "low.out"), "--open-mode=append",
        "--wrap", f"echo restart=${{SLURM_RESTART_COUNT:-0}} >> {log}; sleep 60",
    ).strip()  # fmt: skip
    try:
        _wait(lambda: log.exists() and "restart=0" in log.read_text(), 30, "the low job to start")
        _sh(
            env, "sbatch", "--wait", "--parsable", f"-p{URGENT_PARTITION}", "--gres=gpu:1",
            "-t", "1", "-o", str(tmp_path / "high.out"), "--wrap", "echo CVD=$CUDA_VISIBLE_DEVICES",
        )  # fmt: skip
        assert "CVD=" in (tmp_path / "high.out").read_text()
        # requeued jobs wait cred_expire (5 s) before they may start again
        _wait(lambda: "restart=1" in log.read_text(), 30, "the preempted job to run again")
        state = _sh(env, "scontrol", "-o", "show", "job", low)
        assert "Restarts=1" in state, state
    finally:
        subprocess.run(["scancel", low], env=env, check=False)


APP = '''
import json, os, socket
import hydra
from hydra.core.hydra_config import HydraConfig

@hydra.main(version_base="1.3", config_path=".", config_name="config")
def main(cfg):
    out = HydraConfig.get().runtime.output_dir
    rec = {
        "x": cfg.x,
        "output_dir": out,
        "job_id": os.environ.get("SLURM_JOB_ID"),
        "array_job_id": os.environ.get("SLURM_ARRAY_JOB_ID"),
        "cvd": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "node": os.environ.get("SLURMD_NODENAME"),
    }
    with open(os.path.join(out, "result.json"), "w") as f:
        json.dump(rec, f)
    return cfg.x * 10

if __name__ == "__main__":
    main()
'''


@slurm
def test_hydra_multirun_through_submitit_slurm(env, tmp_path):
    app = tmp_path / "app"
    app.mkdir()
    (app / "app.py").write_text(APP)
    (app / "config.yaml").write_text("x: 0\n")
    sweep_dir = tmp_path / "multirun"
    cmd = [
        sys.executable, str(app / "app.py"), "--multirun",
        "hydra/launcher=submitit_slurm",
        f"hydra.launcher.submitit_folder={tmp_path / 'submitit'}/%j",
        "hydra.launcher.timeout_min=5",
        f"hydra.launcher.partition={PARTITION}",
        "hydra.launcher.gpus_per_node=1",
        "hydra.launcher.cpus_per_task=1",
        "hydra.launcher.tasks_per_node=1",
        f"hydra.sweep.dir={sweep_dir}",
        "x=1,2,3",
    ]  # fmt: skip
    t0 = time.monotonic()
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=90, cwd=app)
    wall = time.monotonic() - t0
    assert out.returncode == 0, f"multirun failed:\n{out.stdout}\n{out.stderr}"

    recs = sorted(
        (json.loads(p.read_text()) for p in sweep_dir.glob("*/result.json")), key=lambda r: r["x"]
    )
    assert [r["x"] for r in recs] == [1, 2, 3], (recs, out.stdout, out.stderr)
    assert len({r["output_dir"] for r in recs}) == 3
    # really went through SLURM, as one job array, on our node, with a GPU each
    assert all(r["job_id"] and r["node"] == NODE for r in recs), recs
    assert len({r["array_job_id"] for r in recs}) == 1 and recs[0]["array_job_id"], recs
    assert all(r["cvd"] is not None and r["cvd"].isdigit() for r in recs), recs
    # the launcher's job records came back through submitit
    assert len(list((tmp_path / "submitit").glob("*/*_result.pkl"))) == 3
    print(f"3-job submitit_slurm multirun: {wall:.1f} s")


@slurm
def test_job_dying_without_result_fails_the_multirun(env, tmp_path):
    # A job that dies before submitit can write its result is only visible through the job
    # state, which submitit polls with sacct: the real sacct, reading the cluster's slurmdbd.
    app = tmp_path / "app"
    app.mkdir()
    (app / "app.py").write_text(
        textwrap.dedent(
            """\
            import os, hydra

            @hydra.main(version_base="1.3", config_path=".", config_name="config")
            def main(cfg):
                os._exit(3)

            if __name__ == "__main__":
                main()
            """
        )
    )
    (app / "config.yaml").write_text("x: 0\n")
    cmd = [
        sys.executable, str(app / "app.py"), "--multirun",
        "hydra/launcher=submitit_slurm",
        f"hydra.launcher.submitit_folder={tmp_path / 'submitit'}/%j",
        "hydra.launcher.timeout_min=5",
        f"hydra.sweep.dir={tmp_path / 'multirun'}",
        "x=1",
    ]  # fmt: skip
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=90, cwd=app)
    assert out.returncode != 0
    assert "UncompletedJobError" in out.stderr and "state: FAILED" in out.stderr, out.stderr[-3000:]


@pytest.mark.parametrize("ci", ["", "true"])
def test_unavailable_cluster_skips_locally_and_fails_on_ci(ci, monkeypatch, tmp_path):
    # start.sh exits 3 when the machine cannot host the cluster (not root, no apt): a developer
    # machine skips, CI fails. Any other failure is a bug and fails everywhere.
    cannot, broken = tmp_path / "cannot.sh", tmp_path / "broken.sh"
    cannot.write_text("echo '[slurm] CANNOT START: needs root' >&2; exit 3\n")
    broken.write_text("echo 'slurmctld did not start' >&2; exit 1\n")
    monkeypatch.setenv("CI", ci)
    monkeypatch.delenv("ISOFLOP_SKIP_SLURM", raising=False)
    monkeypatch.setattr(slurm_cluster, "_cache", {})
    monkeypatch.setattr(slurm_cluster, "START", cannot)
    if ci:
        with pytest.raises(slurm_cluster.SlurmUnavailable, match="CI=true"):
            slurm_cluster.ensure_slurm()
    else:
        assert slurm_cluster.ensure_slurm() is None
        assert "needs root" in slurm_cluster.unavailable_reason()
        with pytest.raises(pytest.skip.Exception):
            slurm_cluster.require_slurm()
    monkeypatch.setattr(slurm_cluster, "_cache", {})
    monkeypatch.setattr(slurm_cluster, "START", broken)
    with pytest.raises(RuntimeError, match="slurmctld did not start"):
        slurm_cluster.ensure_slurm()


def test_sweeps_slurm_check_passes_on_the_cluster(env, monkeypatch):
    """`python -m sweeps ... hydra/launcher=submitit_slurm` refuses up front when no cluster answers;
    with the localhost cluster's SLURM_CONF and PATH it finds one."""
    from sweeps.__main__ import slurm_problem
    for key in ("SLURM_CONF", "PATH"):
        monkeypatch.setenv(key, env[key])
    assert slurm_problem() is None
    monkeypatch.setenv("SLURM_CONF", "/nonexistent/slurm.conf")
    assert "sinfo" in (slurm_problem() or "")
