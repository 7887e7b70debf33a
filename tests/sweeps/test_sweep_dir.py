"""A sweep directory that cannot drift: it records its config's identity, refuses another config
with the keys that differ, and keeps its metadata when a command fails to launch."""
from __future__ import annotations

import json

import pytest

from tests.conftest import run_cli
from tests.reliability.helpers import ENV

SWEEP = ["sweep=demo", "sweep.budgets=[1e10]", "sweep.sizes_per_budget=3", "sweep.span=4", "sweep.tokens_per_param=2",
         "model.seq_len=64", "optim.batch_tokens=1024", "eval_tokens=2048", "wandb.mode=disabled"]
METADATA = ("command.json", "plan.json", "sweep_config.json", "results.csv", "summary.json")


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("sweepdir") / "sweep"
    proc = run_cli("-m", "sweeps", *SWEEP, f"sweep.out_dir={path}", env=ENV)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return path


def snapshot(sweep_dir):
    return {name: (sweep_dir / name).read_bytes() for name in METADATA} | {
        "runs": sorted(p.name for p in (sweep_dir / "runs").iterdir())}


def test_the_sweep_records_its_config(sweep_dir):
    identity = json.loads((sweep_dir / "sweep_config.json").read_text())["identity"]
    assert identity["model.seq_len"] == 64 and identity["optim.batch_tokens"] == 1024
    assert "model.params" not in identity and "budget.flops" not in identity and "sweep.budgets" not in identity


def test_another_config_into_the_directory_is_refused_with_the_keys(sweep_dir):
    before = snapshot(sweep_dir)
    for extra in ([], ["dry_run=true"]):
        proc = run_cli("-m", "sweeps", *SWEEP, "model.seq_len=32", "optim.lr_constant=0.01", f"sweep.out_dir={sweep_dir}",
                       *extra, env=ENV)
        assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
        line = proc.stderr.strip()
        assert line.startswith(f"error: sweep.out_dir: {sweep_dir} holds a sweep of another config (") and "\n" not in line
        assert "model.seq_len 64 -> 32" in line and "optim.lr_constant 0.003 -> 0.01" in line
    assert snapshot(sweep_dir) == before, "nothing trained, nothing rewritten"


def test_the_same_config_extends_the_sweep(sweep_dir):
    proc = run_cli("-m", "sweeps", *SWEEP, f"sweep.out_dir={sweep_dir}", "dry_run=true", env=ENV)
    assert proc.returncode == 0 and proc.stdout.count(" completed") >= 3, proc.stdout[-2000:] + proc.stderr[-2000:]


def test_a_command_that_fails_to_launch_leaves_the_metadata(sweep_dir):
    import torch
    if torch.cuda.is_available():
        pytest.skip("the failing launch here is a GPU pool on a machine without CUDA")
    before = snapshot(sweep_dir)
    proc = run_cli("-m", "sweeps", *SWEEP[:1], "sweep.budgets=[1e10,2e10]", *SWEEP[2:], f"sweep.out_dir={sweep_dir}",
                   "hydra/launcher=gpu_pool", "hydra.launcher.gpus=[0]", env=ENV)
    assert proc.returncode == 2 and "error: hydra.launcher.gpus" in proc.stderr, proc.stderr[-2000:]
    assert snapshot(sweep_dir) == before, "command.json and plan.json are those of the last command that ran"


def test_the_plan_warns_when_runs_are_mostly_embedding(tmp_path):
    # a 4,096-token vocabulary on ~100K-parameter models: the table is most of every model
    proc = run_cli("-m", "sweeps", "sweep=demo", "data.vocab_size=4096", "sweep.budgets=[1e12]", "sweep.tokens_per_param=5",
                   f"sweep.out_dir={tmp_path / 's'}", "dry_run=true", env=ENV)
    assert proc.returncode == 0, proc.stderr[-2000:]
    line = next(line for line in proc.stderr.splitlines() if "mostly embedding" in line)
    assert line.startswith("warning: 4 of 5 runs are mostly embedding; N=") and "smaller data.vocab_size" in line
    demo = run_cli("-m", "sweeps", "sweep=demo", f"sweep.out_dir={tmp_path / 'd'}", "dry_run=true", env=ENV)
    assert demo.returncode == 0 and "mostly embedding" not in demo.stdout + demo.stderr
