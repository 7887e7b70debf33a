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
    one, two = base / "one", base / "two"
    t0 = time.time()
    single = run_cli("-m", "train", *TINY, f"out_dir={one}", env=ENV)
    assert single.returncode == 0, single.stdout[-2000:] + single.stderr[-3000:]
    t1 = time.time()
    ddp = run_cli("-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                  "-m", "train", *TINY, f"out_dir={two}", env=ENV)
    assert ddp.returncode == 0, ddp.stdout[-2000:] + ddp.stderr[-3000:]
    print(f"single-process run {t1 - t0:.1f}s, 2-process run {time.time() - t1:.1f}s")
    return one, two, single, ddp


def test_both_complete_and_record_their_world_size(runs):
    one, two, _, _ = runs
    for run_dir, world_size in ((one, 1), (two, 2)):
        assert read_json(run_dir / "result.json")["status"] == "completed"
        assert read_json(run_dir / "env.json")["world_size"] == world_size


def test_plans_are_identical(runs):
    one, two, _, _ = runs
    plan_one, plan_two = read_json(one / "plan.json"), read_json(two / "plan.json")
    assert plan_one == plan_two  # same shape, tokens, steps, global batch, lr and run id
    assert plan_one["batch_seqs"] % 2 == 0
    result_one, result_two = read_json(one / "result.json"), read_json(two / "result.json")
    for key in ("tokens", "steps", "flops", "run_id"):
        assert result_one[key] == result_two[key], key


def test_train_losses_match_per_step(runs):
    one, two, _, _ = runs
    rows_one, rows_two = read_metrics(one), read_metrics(two)
    assert [r["step"] for r in rows_one] == [r["step"] for r in rows_two]
    assert [r["tokens"] for r in rows_one] == [r["tokens"] for r in rows_two]
    diffs = [rel(a["train_loss"], b["train_loss"]) for a, b in zip(rows_one, rows_two)]
    assert max(diffs[:EARLY_STEPS]) <= EARLY_RTOL, diffs[:EARLY_STEPS]
    assert max(diffs) <= ALL_STEPS_RTOL, diffs


def test_val_losses_match(runs):
    one, two, _, _ = runs
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
    one, two, _, ddp = runs

    def listing(run_dir: Path) -> list[str]:
        return sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*"))

    assert listing(two) == listing(one)  # no stray temp files, no second checkpoint
    rows = read_metrics(two)
    # One row per step: a second writer would append every step twice.
    assert [r["step"] for r in rows] == list(range(1, read_json(two / "plan.json")["steps"] + 1))
    assert ddp.stdout.count("final val loss") == 1  # the summary comes from rank 0 alone
