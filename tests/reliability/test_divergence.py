"""Divergence: an absurd learning rate ends the run early as `diverged`, with the reason in
result.json and no loss recorded; a sweep goes on past such a run; the analysis leaves it out and
says so.
"""
from __future__ import annotations

import csv
import json
import re

import pytest

from tests.conftest import run_cli
from tests.reliability.helpers import ENV, metrics, result, train


def test_nan_loss_from_an_absurd_lr_is_diverged(tmp_path):
    run_dir = tmp_path / "run"
    proc = train(f"out_dir={run_dir}", "optim.lr=1e3")
    assert proc.returncode == 3, proc.stderr[-3000:]
    res = result(run_dir)
    assert res["status"] == "diverged"
    step = int(re.fullmatch(r"non-finite train loss nan at step (\d+)", res["reason"]).group(1))
    assert res["steps"] == step < 42, "stopped early"
    assert res["final_val_loss"] is None and res["final_train_loss"] is None, "no loss is a result"
    assert metrics(run_dir)[-1]["step"] == step
    assert f"diverged (non-finite train loss nan at step {step})" in proc.stdout


@pytest.mark.parametrize("settings,patience,factor", [((), 10, 2), (("divergence_factor=3", "divergence_patience=5"), 5, 3)])
def test_loss_spike_held_for_k_steps_is_diverged(tmp_path, settings, patience, factor):
    # lr=10 (500x the rule's) sends the loss from 6.2 to 100-300 from step 2 on, for some 30 steps:
    # finite (no NaN to catch it), but far above twice the best. (lr=30 and up reach NaN within a
    # few steps, which the first test covers.)
    run_dir = tmp_path / "run"
    proc = train(f"out_dir={run_dir}", "optim.lr=10", *settings)
    assert proc.returncode == 3, proc.stderr[-3000:]
    res = result(run_dir)
    assert res["status"] == "diverged"
    assert re.fullmatch(rf"loss spike: the median train loss of the last {patience + 1} steps, [0-9.e+]+, stayed "
                        rf"above {factor}x its lowest value \([0-9.]+\) for {patience} consecutive steps, "
                        rf"at step {patience + 1}", res["reason"]), res["reason"]
    assert res["steps"] == patience + 1 and res["final_val_loss"] is None


def test_a_diverged_run_is_skipped_and_retried_on_request(tmp_path):
    run_dir = tmp_path / "run"
    assert train(f"out_dir={run_dir}", "optim.lr=10").returncode == 3
    assert result(run_dir)["reason"].startswith("loss spike")
    again = train(f"out_dir={run_dir}", "optim.lr=10")
    assert again.returncode == 3 and "already diverged" in again.stdout and "retry_diverged=true" in again.stdout
    # the same run with the spike check off, retried: trained again from step 0
    retried = train(f"out_dir={run_dir}", "optim.lr=10", "divergence_factor=0", "retry_diverged=true")
    assert "retrying a diverged run from step 0" in retried.stdout, retried.stdout[-2000:]
    res = result(run_dir)
    assert not (res.get("reason") or "").startswith("loss spike"), res
    assert metrics(run_dir)[0]["step"] == 1 and [r["step"] for r in metrics(run_dir)] == list(range(1, res["steps"] + 1))


def _shakespeare():
    from train.data.corpora import embedded_files
    return embedded_files()[1][0]


def test_healthy_runs_on_a_mixed_corpus_are_not_diverged(tmp_path):
    """Code, prose and near-constant tables in one corpus: single batches range from a fraction of
    the typical loss to well above it. Judged batch by batch against the lowest one (the check
    before the moving median), this run counts as diverged; with the median it completes."""
    import statistics
    import sysconfig
    from pathlib import Path
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    sources = sorted(stdlib.glob("[a-c]*.py"))[:10] + [_shakespeare()]
    for i, src in enumerate(sources):
        (corpus / f"{i:03d}.txt").write_text(src.read_text(errors="replace"))
    for i in range(3):  # logs and tables: the same few lines over and over, learned within steps
        (corpus / f"table{i}.txt").write_text("".join(f"{k % 10},OK,{i}\n" for k in range(6000)))
    run_dir = tmp_path / "run"
    proc = train(f"out_dir={run_dir}", "data=text", f"data.paths=[{corpus}]", "data.sample_by=document",
                 "data.vocab_size=512", "optim.batch_tokens=256", "budget.flops=4e9", "model.seq_len=64")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert result(run_dir)["status"] == "completed"
    losses = [row["train_loss"] for row in metrics(run_dir)]
    best, streak, tripped = losses[0], 0, False
    for loss in losses:  # the single-batch rule: 2x the best batch so far, for 10 steps
        best = min(best, loss)
        streak = streak + 1 if loss > 2 * best else 0
        tripped = tripped or streak >= 10
    assert tripped, f"the corpus is not mixed enough to test this: lowest batch {min(losses):.2f}, " \
                    f"median {statistics.median(losses):.2f}"


def test_sweep_goes_on_past_a_diverged_run_and_the_analysis_excludes_it(tmp_path):
    # One budget, three sizes; a per-size LR table gives the smallest an absurd LR (1e3).
    sweep_dir = tmp_path / "sweep"
    table = ["optim.lr_rule=table", "+optim.lr_table.1=1000", "+optim.lr_table.20000=1000",
             "+optim.lr_table.25000=0.02", "+optim.lr_table.1000000000=0.02"]
    proc = run_cli("-m", "sweeps", "sweep=demo", "sweep.budgets=[1e10]", "sweep.sizes_per_budget=3", "sweep.span=4",
                   "sweep.tokens_per_param=2", "model.seq_len=64", "optim.batch_tokens=1024", "eval_tokens=2048",
                   "wandb.mode=disabled", f"sweep.out_dir={sweep_dir}", *table, env=ENV)
    # the sweep trains the others, then says so: exit 3 and one error line naming the diverged run
    assert proc.returncode == 3, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines()[-1].startswith("error: sweep: 1 runs diverged"), proc.stderr[-2000:]
    assert "retry_diverged=true" in proc.stderr
    summary = json.loads((sweep_dir / "summary.json").read_text())
    assert summary["diverged"] == 1 and summary["completed"] == 2 and summary["failed"] == 0, summary
    with open(sweep_dir / "results.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    diverged = [r for r in rows if r["status"] == "diverged"]
    assert len(diverged) == 1 and diverged[0]["loss"] == "", "a diverged run records no loss"
    assert all(float(r["loss"]) > 0 for r in rows if r["status"] == "completed")
    # The second sweep skips the diverged run instead of training it again.
    again = run_cli("-m", "sweeps", "sweep=demo", "sweep.budgets=[1e10]", "sweep.sizes_per_budget=3", "sweep.span=4",
                    "sweep.tokens_per_param=2", "model.seq_len=64", "optim.batch_tokens=1024", "eval_tokens=2048",
                    "wandb.mode=disabled", f"sweep.out_dir={sweep_dir}", *table, "dry_run=true", env=ENV)
    states = [line.split()[-1] for line in again.stdout.splitlines() if line.strip().startswith("1e+10")]
    assert again.returncode == 0 and sorted(states) == ["completed", "completed", "diverged"], again.stdout[-2000:]

    # The analysis: the real diverged row among synthetic completed ones (3 budgets x 5 sizes of
    # L = E + A/N^a + B/D^b, Chinchilla's fit), so that a fit exists to exclude it from.
    mixed = tmp_path / "mixed.csv"
    with open(mixed, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["flops", "params", "tokens", "loss", "budget", "run_id",
                                                    "status", "convention"])
        writer.writeheader()
        for budget in (1e18, 1e19, 1e20):
            n_opt = (budget / 120) ** 0.5
            for k in range(-2, 3):
                n = n_opt * 2.0 ** k
                d = budget / (6 * n)
                writer.writerow({"flops": budget, "params": n, "tokens": d, "budget": budget, "status": "completed",
                                 "loss": 1.69 + 406.4 / n ** 0.34 + 410.7 / d ** 0.28, "run_id": f"syn{budget:.0e}{k}",
                                 "convention": "6N"})
        writer.writerow({k: diverged[0][k] for k in writer.fieldnames})
    fit = run_cli("-m", "analysis", "fit", str(mixed), "--out", str(tmp_path / "fit"), "--bootstrap", "0",
                  "--no-approach1", "--no-approach3")
    assert fit.returncode == 0, fit.stderr[-3000:]
    assert "warning: excluded 1 run(s) that did not complete (1 diverged)" in fit.stderr
    report = json.loads((tmp_path / "fit" / "fit.json").read_text())
    assert "excluded 1 run(s) that did not complete (1 diverged)" in report["warnings"]
    assert sum(b["n_points"] for b in report["budgets"]) == 15


@pytest.mark.slow
def test_a_sweep_on_code_and_prose_completes_every_run(tmp_path):
    """The acceptance grid in small: 3 budgets x 4 sizes on Python sources and a play, every run
    `completed`. (The full-size check, demo budgets on the whole standard library with the fit,
    is recorded in docs/reliability.md.)"""
    import sysconfig
    from pathlib import Path
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for i, src in enumerate(sorted(stdlib.glob("[a-f]*.py"))[:30] + [_shakespeare()]):
        (corpus / f"{i:03d}.txt").write_text(src.read_text(errors="replace"))
    sweep_dir = tmp_path / "sweep"
    proc = run_cli("-m", "sweeps", "sweep=demo", "sweep.sizes_per_budget=4", "sweep.budgets=[1e10,2e10,4e10]",
                   "sweep.tokens_per_param=5", "data=text", f"data.paths=[{corpus}]", "data.sample_by=document",
                   "model.seq_len=64", "eval_tokens=4096", "wandb.mode=disabled", f"sweep.out_dir={sweep_dir}", env=ENV)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    summary = json.loads((sweep_dir / "summary.json").read_text())
    assert summary["completed"] == summary["points"] == 12 and summary["diverged"] == 0, summary
