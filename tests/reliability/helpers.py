"""Shared pieces of the reliability tests (docs/reliability.md): a micro run, its uninterrupted
reference, and the invariants that must hold on disk after any fault.

The micro run is an 18k-parameter model trained for 42 steps (about a second of training; most
of each process is Python and torch starting up). Every process runs with one OpenMP thread:
the machine has 2 cores shared with other jobs, and the bit-for-bit comparisons need the same
thread count in every run.
"""
from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import torch

from tests.conftest import REPO

MICRO = ["model.params=2e4", "budget.flops=5e9", "model.seq_len=64", "model.tie_embeddings=true",
         "data.vocab_size=512", "optim.batch_tokens=1024", "eval_tokens=2048", "eval_every=10", "eval_fraction=1",
         "checkpoint_every=7", "log_every=1000", "wandb.mode=disabled"]
STEPS = 42  # the micro run's plan: 42 steps, checkpoints at 7, 14, ..., 42, evals at 10, 20, ...
ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
# Per-step fields that depend on the wall clock, not on the computation.
TIMING_KEYS = ("tokens_per_s", "mfu")
RESULT_KEYS = ("status", "run_id", "seed", "budget_flops", "params", "tokens", "steps", "flops", "lr",
               "final_val_loss", "final_train_loss")


def env(**extra: str) -> dict:
    full = os.environ.copy() | ENV | extra
    if "ISOFLOP_FAULT" not in extra:
        full.pop("ISOFLOP_FAULT", None)
    return full


def train(*args: str, fault: str | None = None, timeout: float = 240, **env_extra: str) -> subprocess.CompletedProcess:
    """`python -m train <MICRO> <args>` in a subprocess, optionally with ISOFLOP_FAULT set."""
    extra = dict(env_extra) | ({"ISOFLOP_FAULT": fault} if fault else {})
    return subprocess.run([sys.executable, "-m", "train", *MICRO, *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout, env=env(**extra))


def popen_train(*args: str, fault: str | None = None, log: Path) -> subprocess.Popen:
    extra = {"ISOFLOP_FAULT": fault} if fault else {}
    with open(log, "w") as out:
        return subprocess.Popen([sys.executable, "-m", "train", *MICRO, *args], cwd=REPO, stdout=out,
                                stderr=subprocess.STDOUT, env=env(**extra))


def metrics(run_dir: Path) -> list[dict]:
    """metrics.jsonl without the wall-clock fields (a torn last line fails json.loads here)."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [{k: v for k, v in row.items() if k not in TIMING_KEYS} for row in rows]


def result(run_dir: Path) -> dict:
    return json.loads((run_dir / "result.json").read_text())


def same_result(run_dir: Path, reference: Path) -> None:
    """The run's result and its whole loss curve equal the reference's, bit for bit."""
    got, want = result(run_dir), result(reference)
    assert {k: got[k] for k in RESULT_KEYS} == {k: want[k] for k in RESULT_KEYS}
    assert metrics(run_dir) == metrics(reference)


def assert_nothing_torn(run_dir: Path, sweep_dir: Path | None = None) -> None:
    """What a reader sees after a crash: result.json absent or whole and valid; every checkpoint
    loads; results.csv absent or a whole table. Temp files (.*.tmp) may remain: readers ignore them."""
    path = run_dir / "result.json"
    if path.exists():
        res = json.loads(path.read_text())
        assert res["status"] in ("completed", "diverged", "failed"), res
        if res["status"] == "completed":
            assert isinstance(res["final_val_loss"], float) and res["steps"] == STEPS, res
    for ckpt in sorted((run_dir / "checkpoints").glob("step-*.pt")):
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
        assert state["step"] == int(ckpt.stem.split("-")[1]), ckpt
    if sweep_dir is not None and (sweep_dir / "results.csv").exists():
        with open(sweep_dir / "results.csv", newline="") as handle:
            rows = list(csv.DictReader(handle))
        for row in rows:
            assert row["status"] in ("completed", "diverged", "failed"), row
            if row["status"] == "completed":
                assert float(row["loss"]) > 0 and float(row["params"]) > 0, row


def copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst
