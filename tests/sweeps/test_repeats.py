"""Repeated data decided at plan time: declared corpus sizes, refusal before launch, one warning
per run, epochs recorded per run."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from tests.conftest import REPO, run_cli

ENV = {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
# The demo preset at a budget whose runs need 1.06-4.06 epochs of its 5.79M training tokens.
BIG = ["sweep=demo", "sweep.budgets=[1e13]", "sweep.sizes_per_budget=3", "sweep.span=4", "wandb.mode=disabled"]
REFUSED = "error: data.repeat_policy=refuse: 3 of 3 runs need more than the 5,792,384 unique training tokens"


def test_refuse_stops_the_sweep_before_anything_is_launched_or_written(tmp_path, demo_corpus):
    sweep_dir = tmp_path / "s"
    proc = run_cli("-m", "sweeps", *BIG, "data.repeat_policy=refuse", f"sweep.out_dir={sweep_dir}", env=ENV)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.startswith(REFUSED) and proc.stderr.count("\n") == 1, proc.stderr
    assert "4.06 epochs" in proc.stderr and "Traceback" not in proc.stderr
    assert not sweep_dir.exists()  # no run, no command.json, no plan.json


def test_dry_run_uses_the_declared_size_without_preparing_the_data(tmp_path):
    """A data config not in the cache: the dry run takes data.unique_tokens at its word (nothing
    tokenized, nothing written to the cache) and refuses as the real sweep would."""
    cache = tmp_path / "cache"
    proc = run_cli("-m", "sweeps", *BIG, "data.vocab_size=300", "data.unique_tokens=1000000",
                   f"data.cache_dir={cache}", "data.repeat_policy=refuse", f"sweep.out_dir={tmp_path}/s",
                   "dry_run=true", env=ENV)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "1,000,000 training tokens (declared by data.unique_tokens" in proc.stdout
    assert proc.stderr.startswith("error: data.repeat_policy=refuse: 3 of 3 runs need more than the 999,936")
    assert not any(p.is_dir() and "embedded" in p.name for p in cache.glob("*"))
    assert not (tmp_path / "s").exists()


def test_warn_prints_once_per_run_and_records_epochs(tmp_path):
    """A tiny real sweep on a small corpus of one's own (one budget, three sizes), every run
    repeating data: the plan warns once per run, the runs do not warn again, and result.json and
    results.csv record each run's epochs."""
    corpus = tmp_path / "corpus.txt"
    corpus.write_text((REPO / "docs" / "training.md").read_text())
    sweep_dir = tmp_path / "s"
    proc = run_cli("-m", "sweeps", "sweep=demo", "data=text", f"data.paths=[{corpus}]", "data.vocab_size=320",
                   f"data.cache_dir={tmp_path / 'cache'}", "sweep.budgets=[1e10]", "sweep.sizes_per_budget=3",
                   "sweep.span=4", "sweep.tokens_per_param=2", "model.seq_len=64", "optim.batch_tokens=1024",
                   "eval_tokens=1024", "wandb.mode=disabled", f"sweep.out_dir={sweep_dir}", env=ENV)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    output = proc.stdout + proc.stderr
    assert output.count("data repeats") == 3, output
    assert "[data] warning" not in output  # the runs themselves stay quiet about it
    results = [json.loads(p.read_text()) for p in sorted(sweep_dir.glob("runs/*/result.json"))]
    assert len(results) == 3 and all(r["status"] == "completed" for r in results)
    with open(sweep_dir / "results.csv", newline="") as handle:
        rows = {row["run_id"]: row for row in csv.DictReader(handle)}
    for result in results:
        assert result["epochs"] > 1
        assert float(rows[result["run_id"]]["epochs"]) == pytest.approx(result["epochs"])
        assert f"({result['epochs']:.2f} epochs)" in output  # the plan's figure is the run's


def test_a_single_run_warns_once(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text((REPO / "docs" / "training.md").read_text())
    run_dir = tmp_path / "run"
    proc = run_cli("-m", "train", "data=text", f"data.paths=[{corpus}]", "data.vocab_size=320",
                   f"data.cache_dir={tmp_path / 'cache'}", "model.params=1.4e4", "model.tie_embeddings=true",
                   "budget.flops=1e10", "model.seq_len=64", "optim.batch_tokens=1024", "eval_tokens=1024", "wandb.mode=disabled",
                   f"out_dir={run_dir}", env=ENV)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stderr.count("epochs): repeated data") == 1, proc.stderr
    assert "RepeatedDataWarning" not in proc.stderr
    assert json.loads((run_dir / "result.json").read_text())["epochs"] > 1
