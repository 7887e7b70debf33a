"""One complete training run on the CPU, through the real CLI in a subprocess."""
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, run_cli

TINY = ["model.params=1e6", "budget.flops=3e11", "model.seq_len=128", "wandb.mode=disabled"]


def read_metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run") / "tiny"
    proc = run_cli("-m", "train", *TINY, f"out_dir={run_dir}", "eval_every=10", "eval_fraction=1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir, proc


def test_run_directory_is_complete(tiny_run):
    run_dir, proc = tiny_run
    for name in ("config.yaml", "metrics.jsonl", "result.json", "env.json", "plan.json"):
        assert (run_dir / name).is_file(), name
    assert list((run_dir / "checkpoints").glob("step-*.pt"))
    result = json.loads((run_dir / "result.json").read_text())
    assert result["status"] == "completed"
    assert result["budget_flops"] == 3e11
    assert abs(result["flops"]["6N"] / 3e11 - 1) <= 0.01
    assert set(result["flops"]) == {"6N", "6N_nonembed", "6N+attn", "chinchilla_exact"}
    assert result["params"]["total"] == result["params"]["non_embedding"] + json.loads(
        (run_dir / "plan.json").read_text())["params"]["embedding"]
    assert result["flops"]["6N"] == 6 * result["params"]["total"] * result["tokens"]
    assert math.isfinite(result["final_val_loss"]) and math.isfinite(result["final_train_loss"])
    env = json.loads((run_dir / "env.json").read_text())
    assert env["torch"] and env["device"] == "cpu"
    assert "final val loss" in proc.stdout


def test_metrics_have_losses_against_tokens_and_flops(tiny_run):
    run_dir, _ = tiny_run
    rows = read_metrics(run_dir)
    plan = json.loads((run_dir / "plan.json").read_text())
    assert [r["step"] for r in rows] == list(range(1, plan["steps"] + 1))
    for row in rows:
        assert {"step", "tokens", "flops", "lr", "train_loss", "tokens_per_s"} <= set(row)
        assert row["tokens"] == row["step"] * plan["batch_tokens"]
        assert row["flops"] == pytest.approx(row["tokens"] * plan["flops_per_token"]["6N"])
    evals = [r for r in rows if "val_loss" in r]
    assert len(evals) >= 3 and evals[-1]["step"] == plan["steps"]
    assert evals[-1]["val_loss"] < evals[0]["val_loss"] - 0.3  # the loss falls
    # The cosine ends at exactly 10% of the peak at the run's last step.
    assert rows[-1]["lr"] == pytest.approx(0.1 * plan["lr"], rel=1e-9)
    assert max(r["lr"] for r in rows) == pytest.approx(plan["lr"], rel=1e-9)


def test_rerunning_a_finished_run_trains_nothing(tiny_run):
    run_dir, _ = tiny_run
    before = (run_dir / "metrics.jsonl").read_text()
    proc = run_cli("-m", "train", *TINY, f"out_dir={run_dir}", "eval_every=10", "eval_fraction=1")
    assert proc.returncode == 0 and "nothing to do" in proc.stdout
    assert (run_dir / "metrics.jsonl").read_text() == before


def test_sigkill_then_resume_is_bit_exact(tmp_path, tiny_run):
    reference = json.loads((tiny_run[0] / "result.json").read_text())
    run_dir = tmp_path / "killed"
    args = [sys.executable, "-m", "train", *TINY, f"out_dir={run_dir}", "eval_every=10", "eval_fraction=1", "checkpoint_every=7"]
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not list((run_dir / "checkpoints").glob("step-*.pt")):
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run_dir / "result.json").exists(), "killed too late: the run had already finished"
    resumed = run_cli("-m", "train", *TINY, f"out_dir={run_dir}", "eval_every=10", "eval_fraction=1", "checkpoint_every=7")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from step" in resumed.stdout
    result = json.loads((run_dir / "result.json").read_text())
    assert result["final_val_loss"] == reference["final_val_loss"]
    assert result["final_train_loss"] == reference["final_train_loss"]
    steps = [r["step"] for r in read_metrics(run_dir)]
    assert steps == sorted(set(steps)) == list(range(1, result["steps"] + 1))


@pytest.mark.parametrize("override,field", [
    ("budget.flops=1e7", "budget.flops"),
    ("budget.flops=0", "budget.flops"),
    ("data.source=text", "data.paths"),
])
def test_bad_input_exits_nonzero_without_result(tmp_path, override, field):
    run_dir = tmp_path / "bad"
    proc = run_cli("-m", "train", *TINY, override, f"out_dir={run_dir}")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith(f"error: {field}")
    assert not (run_dir / "result.json").exists()


def test_missing_data_file(tmp_path):
    proc = run_cli("-m", "train", *TINY, "data=text", f"data.paths=[{tmp_path}/missing.txt]", f"out_dir={tmp_path}/r")
    assert proc.returncode == 2 and "missing.txt" in proc.stderr
    assert not (tmp_path / "r" / "result.json").exists()


def test_corrupt_checkpoint_is_refused(tmp_path):
    run_dir = tmp_path / "corrupt"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / "step-00000005.pt").write_bytes(b"not a checkpoint at all")
    proc = run_cli("-m", "train", *TINY, f"out_dir={run_dir}")
    assert proc.returncode != 0
    assert "no checkpoint loads" in proc.stderr
    assert not (run_dir / "result.json").exists()


@pytest.mark.parametrize("override,expected", [
    ("model.foo=1", "error: model.foo: unknown config key"),
    ("model=llama-3b", "error: model: unknown model 'llama-3b'"),
    ("budget.convention=7N", "error: budget.convention: unknown convention"),
    ("model.d_model=100", "error: model: give exactly one of"),
])
def test_config_mistakes_are_one_line_errors(override, expected):
    proc = run_cli("-m", "train", *TINY, override, "dry_run=true")
    assert proc.returncode == 2
    assert proc.stderr.strip() == proc.stderr.strip().splitlines()[0]
    assert proc.stderr.startswith(expected)


def test_dry_run_json_is_consistent():
    proc = run_cli("-m", "train", "model.params=3e6", "budget.flops=1e13", "budget.convention=6N+attn", "dry_run=true")
    assert proc.returncode == 0, proc.stderr
    plan = json.loads(proc.stdout.strip().splitlines()[-1])
    assert plan["flops_per_token"]["6N"] == 6 * plan["params"]["total"]
    assert abs(plan["tokens"] * plan["flops_per_token"]["6N+attn"] / 1e13 - 1) <= 0.01
    assert plan["tokens"] == plan["steps"] * plan["batch_tokens"]
    assert set(plan["shape"]) >= {"n_layer", "d_model", "n_head", "head_dim", "d_ff", "vocab_size", "seq_len"}
    catalog = run_cli("-m", "train", "model=llama-70m", "data=embedded_gpt2", "budget.flops=1e18", "dry_run=true")
    assert catalog.returncode == 0, catalog.stderr
    assert json.loads(catalog.stdout.strip().splitlines()[-1])["shape"]["vocab_size"] == 50304


def test_every_evaluation_reads_the_same_sequences_and_eval_fraction_bounds_their_count(tmp_path):
    """Every evaluation reads all eval_tokens, so the curve is one quantity from start to end.
    eval_fraction bounds how many come before the last: with 2% of this 54K-token run's compute
    (3,225 eval tokens) and 1,024 eval tokens each, 3 of the 5 that eval_every=5 asks for before
    the last fit; the interval stretches to 10, a whole multiple of itself, leaving 2.
    eval_fraction=1 keeps all of them; where both runs evaluated, the losses are bit for bit the
    same, and so is training."""
    args = [*TINY, "eval_every=5", "eval_tokens=1024"]
    lean_dir, full_dir = tmp_path / "lean", tmp_path / "full"
    for d, extra in ((lean_dir, []), (full_dir, ["eval_fraction=1"])):
        proc = run_cli("-m", "train", *args, f"out_dir={d}", *extra)
        assert proc.returncode == 0, proc.stderr[-3000:]
    lean_rows, full_rows = read_metrics(lean_dir), read_metrics(full_dir)
    assert [r["train_loss"] for r in lean_rows] == [r["train_loss"] for r in full_rows]
    lean_evals = {r["step"]: r["val_loss"] for r in lean_rows if "val_loss" in r}
    full_evals = {r["step"]: r["val_loss"] for r in full_rows if "val_loss" in r}
    last = max(full_evals)
    assert sorted(full_evals) == list(range(5, last + 1, 5))  # eval_fraction=1 affords every one
    assert sorted(lean_evals) == [10, 20, last] and last == 30
    assert all(lean_evals[step] == full_evals[step] for step in lean_evals)
    result = json.loads((lean_dir / "result.json").read_text())
    assert result["final_val_loss"] == json.loads((full_dir / "result.json").read_text())["final_val_loss"]


def test_export_command_on_a_trained_run(tmp_path, tiny_run):
    """`python -m train.export RUN_DIR --out DIR` on a real run directory: transformers loads the
    directory, and its logits equal those of the trained model from the run's checkpoint."""
    import torch
    from transformers import AutoModelForCausalLM

    from train.run.checkpoint import load_model_for_export

    run_dir, _ = tiny_run
    proc = run_cli("-m", "train.export", str(run_dir), "--out", str(tmp_path / "hf"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "exported" in proc.stdout
    ours = load_model_for_export(run_dir).eval()
    theirs = AutoModelForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.float32).eval()
    idx = torch.randint(0, ours.shape.vocab_size, (2, ours.shape.seq_len))
    with torch.no_grad():
        assert torch.allclose(ours(idx), theirs(input_ids=idx).logits, atol=1e-5, rtol=0)
    missing = run_cli("-m", "train.export", str(tmp_path / "nothing"), "--out", str(tmp_path / "hf2"))
    assert missing.returncode == 2 and missing.stderr.startswith("error: ")
