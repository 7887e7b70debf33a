"""DDP through torchrun on the CPU (gloo, 2 processes) matches the single-process run.

The same tiny config is trained twice through the real CLI: once as `python -m train`, once as
`python -m torch.distributed.run --nproc_per_node=2 -m train`. The global batch is pinned to an
even number of sequences (optim.batch_tokens=768, 6 x 128), so the planner picks the same plan
for world sizes 1 and 2, and the data order gives both runs the same samples at every step.

Tolerances. With a global-mean loss, the two runs differ only in float32 summation order (each
rank sums half the batch, gloo averages the gradients; the loss mean is all-reduced). Measured
on a 2-core CPU with OMP_NUM_THREADS=1:
  - train loss, steps 1-10: max relative difference 1.6e-7 (float32 rounding). Checked at 1e-5.
  - validation loss at steps 5 and 10: relative 1e-8. Checked at 1e-5.
  - train loss, all 35 steps: rounding differences grow as training amplifies them (lr 1.2e-2),
    up to 4.8e-4 relative by step 32. Checked at 5e-3.
  - final validation loss: 1.4e-4 relative. Checked at 1e-3.
With gradient accumulation under DDP (optim.micro_batch_seqs=1: 3 micro-batches per rank, two of
them under no_sync()), measured the same way: train loss steps 1-10 at most 2.8e-6 relative, all
steps 9.2e-4, final validation loss 6.4e-5; the same tolerances hold.
A broken DDP is far outside these: without the gradient all-reduce the step-2 train loss is
already 20% off and the final validation loss 4%.
"""
import json
import time
from pathlib import Path

import pytest

from tests.conftest import run_cli

TINY = ["model.params=1e6", "budget.flops=1.5e11", "model.seq_len=128", "wandb.mode=disabled",
        "optim.batch_tokens=768", "eval_tokens=8192", "eval_every=5", "eval_fraction=1"]
# One thread per process: the two runs do comparable work and two ranks do not oversubscribe
# a 2-core machine.
ENV = {"OMP_NUM_THREADS": "1"}

EARLY_STEPS = 10
EARLY_RTOL = 1e-5        # float32 rounding only, before training amplifies it
ALL_STEPS_RTOL = 5e-3    # rounding differences amplified over 35 steps
FINAL_VAL_RTOL = 1e-3


def read_metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def rel(a: float, b: float) -> float:
    return abs(a - b) / abs(a)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("ddp")
    one, two, accum = base / "one", base / "two", base / "accum"
    t0 = time.time()
    single = run_cli("-m", "train", *TINY, f"out_dir={one}", env=ENV)
    assert single.returncode == 0, single.stdout[-2000:] + single.stderr[-3000:]
    t1 = time.time()
    ddp = run_cli("-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                  "-m", "train", *TINY, f"out_dir={two}", env=ENV)
    assert ddp.returncode == 0, ddp.stdout[-2000:] + ddp.stderr[-3000:]
    t2 = time.time()
    # Gradient accumulation under DDP: 3 sequences per rank, one per forward pass, so every rank
    # runs two micro-batches under no_sync() and all-reduces on the third.
    ddp_accum = run_cli("-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                        "-m", "train", *TINY, "optim.micro_batch_seqs=1", f"out_dir={accum}", env=ENV)
    assert ddp_accum.returncode == 0, ddp_accum.stdout[-2000:] + ddp_accum.stderr[-3000:]
    print(f"single-process run {t1 - t0:.1f}s, 2-process run {t2 - t1:.1f}s, "
          f"2-process run with accumulation {time.time() - t2:.1f}s")
    return one, two, single, ddp, accum


def test_both_complete_and_record_their_world_size(runs):
    one, two, *_ = runs
    for run_dir, world_size in ((one, 1), (two, 2)):
        assert read_json(run_dir / "result.json")["status"] == "completed"
        assert read_json(run_dir / "env.json")["world_size"] == world_size


SPLIT = ("world_size", "micro_batch_seqs", "grad_accum_steps", "est_peak_memory_gb")  # how a batch runs


def same_plan(a, b) -> bool:
    """The same plan (and run id) but for how the global batch is split over ranks and micro-batches."""
    plan_a, plan_b = read_json(a / "plan.json"), read_json(b / "plan.json")
    return {k: v for k, v in plan_a.items() if k not in SPLIT} == {k: v for k, v in plan_b.items() if k not in SPLIT}


def test_plans_are_identical(runs):
    one, two, *_ = runs
    plan_one, plan_two = read_json(one / "plan.json"), read_json(two / "plan.json")
    # same shape, tokens, steps, global batch, lr and run id; only how the batch runs differs
    how = ("world_size", "micro_batch_seqs", "grad_accum_steps", "est_peak_memory_gb")
    assert {k: v for k, v in plan_one.items() if k not in how} == {k: v for k, v in plan_two.items() if k not in how}
    assert (plan_one["world_size"], plan_two["world_size"]) == (1, 2)
    assert plan_one["batch_seqs"] % 2 == 0
    result_one, result_two = read_json(one / "result.json"), read_json(two / "result.json")
    for key in ("tokens", "steps", "flops", "run_id"):
        assert result_one[key] == result_two[key], key


def test_train_losses_match_per_step(runs):
    one, two, *_ = runs
    rows_one, rows_two = read_metrics(one), read_metrics(two)
    assert [r["step"] for r in rows_one] == [r["step"] for r in rows_two]
    assert [r["tokens"] for r in rows_one] == [r["tokens"] for r in rows_two]
    diffs = [rel(a["train_loss"], b["train_loss"]) for a, b in zip(rows_one, rows_two)]
    assert max(diffs[:EARLY_STEPS]) <= EARLY_RTOL, diffs[:EARLY_STEPS]
    assert max(diffs) <= ALL_STEPS_RTOL, diffs


def test_val_losses_match(runs):
    one, two, *_ = runs
    evals_one = {r["step"]: r["val_loss"] for r in read_metrics(one) if "val_loss" in r}
    evals_two = {r["step"]: r["val_loss"] for r in read_metrics(two) if "val_loss" in r}
    assert evals_one.keys() == evals_two.keys() and {5, 10} <= evals_one.keys()
    for step in (5, 10):  # the validation set and the weights are the same on both
        assert rel(evals_one[step], evals_two[step]) <= EARLY_RTOL, step
    final_one = read_json(one / "result.json")["final_val_loss"]
    final_two = read_json(two / "result.json")["final_val_loss"]
    assert rel(final_one, final_two) <= FINAL_VAL_RTOL, (final_one, final_two)
    assert rel(read_json(one / "result.json")["final_train_loss"],
               read_json(two / "result.json")["final_train_loss"]) <= ALL_STEPS_RTOL


def test_only_rank_zero_writes_the_run_directory(runs):
    one, two, _, ddp, _ = runs

    def listing(run_dir: Path) -> list[str]:
        return sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*"))

    assert listing(two) == listing(one)  # no stray temp files, no second checkpoint
    rows = read_metrics(two)
    # One row per step: a second writer would append every step twice.
    assert [r["step"] for r in rows] == list(range(1, read_json(two / "plan.json")["steps"] + 1))
    assert ddp.stdout.count("final val loss") == 1  # the summary comes from rank 0 alone


def test_accumulation_under_ddp_matches_one_process(runs):
    """2 ranks x 3 micro-batches of one sequence equal one process with the whole batch."""
    one, _, _, _, accum = runs
    assert read_json(accum / "result.json")["status"] == "completed"
    assert same_plan(accum, one)  # micro-batching is not in the run id
    rows_one, rows_accum = read_metrics(one), read_metrics(accum)
    assert [r["step"] for r in rows_one] == [r["step"] for r in rows_accum]
    diffs = [rel(a["train_loss"], b["train_loss"]) for a, b in zip(rows_one, rows_accum)]
    assert max(diffs[:EARLY_STEPS]) <= EARLY_RTOL, diffs[:EARLY_STEPS]
    assert max(diffs) <= ALL_STEPS_RTOL, diffs
    final_one = read_json(one / "result.json")["final_val_loss"]
    final_accum = read_json(accum / "result.json")["final_val_loss"]
    assert rel(final_one, final_accum) <= FINAL_VAL_RTOL, (final_one, final_accum)


@pytest.mark.slurm
@pytest.mark.timeout(600, func_only=True)
def test_two_slurm_tasks_with_accumulation_match_one_process(runs, tmp_path):
    """One run as a SLURM job of 2 tasks on the localhost cluster (hydra/launcher=submitit_slurm,
    tasks_per_node=2): each task gets torch's rank variables from submitit's
    TorchDistributedEnvironment, and the 2 gloo ranks with accumulation match one process."""
    import subprocess
    import sys

    from tests.conftest import REPO
    from tests.slurm_cluster import PARTITION, require_slurm
    env = require_slurm() | ENV
    one = runs[0]
    run_dir, submitit = tmp_path / "run", tmp_path / ".submitit"
    cmd = [sys.executable, "-m", "train", "--multirun", *TINY, "optim.micro_batch_seqs=1", f"out_dir={run_dir}",
           "sweep.name=slurm-ddp", f"sweep.out_dir={tmp_path}", "device=cpu", "hydra/launcher=submitit_slurm", f"hydra.launcher.submitit_folder={submitit}/%j",
           f"hydra.launcher.partition={PARTITION}", "hydra.launcher.nodes=1", "hydra.launcher.tasks_per_node=2",
           "hydra.launcher.cpus_per_task=1", "hydra.launcher.timeout_min=10", f"hydra.sweep.dir={tmp_path}/.hydra"]
    try:
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=500)
    finally:  # never leave the job holding the cluster's cores
        for job in (p.name for p in submitit.glob("*") if p.is_dir()):
            subprocess.run(["scancel", job], env=env, capture_output=True)
    logs = "\n".join(p.read_text()[-1500:] for p in sorted(submitit.glob("*/*_log.*")))
    assert proc.returncode == 0, proc.stderr[-2000:] + logs
    assert read_json(run_dir / "env.json")["world_size"] == 2
    assert read_json(run_dir / "result.json")["status"] == "completed"
    assert same_plan(run_dir, one)
    rows_one, rows_slurm = read_metrics(one), read_metrics(run_dir)
    assert [r["step"] for r in rows_one] == [r["step"] for r in rows_slurm]
    diffs = [rel(a["train_loss"], b["train_loss"]) for a, b in zip(rows_one, rows_slurm)]
    assert max(diffs[:EARLY_STEPS]) <= EARLY_RTOL, diffs[:EARLY_STEPS]
    assert max(diffs) <= ALL_STEPS_RTOL, diffs


def test_a_data_error_on_rank_zero_ends_every_rank(tmp_path):
    """Rank 0 prepares the data while the other ranks wait (on a barrier with a long timeout):
    when it fails, it still reaches the barrier, so every rank ends at once with one line."""
    missing = tmp_path / "missing.txt"
    proc = run_cli("-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "train", *TINY,
                   "data=text", f"data.paths=[{missing}]", f"data.cache_dir={tmp_path / 'cache'}",
                   f"out_dir={tmp_path / 'run'}", env=ENV, timeout=120)
    assert proc.returncode != 0
    # rank 1 says why it stops; torchrun may end rank 0 before its own line is out
    assert "error: data: rank 0 could not prepare the data; its output says why" in proc.stderr, proc.stderr[-3000:]
    assert "Error executing job" not in proc.stderr, proc.stderr[-3000:]
