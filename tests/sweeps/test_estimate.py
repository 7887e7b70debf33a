"""The plan table's time estimates (sweeps/estimate.py) against runs measured on the CPU they are
calibrated for, and the terms of the cost model."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from sweeps.estimate import Throughput, throughput_for

CALIBRATION = Path(__file__).resolve().parents[1] / "data" / "estimates" / "cpu_calibration.json"


def test_every_calibration_run_is_estimated_within_1_5x():
    record = json.loads(CALIBRATION.read_text())
    cpu = throughput_for("cpu", None)
    ratios = {f"{r['sweep']} {r['shape']} V={r['vocab']} D={r['tokens']:,}":
              r["actual_s"] / cpu.seconds(r["flops"], r["tokens"], r["n_layer"], r["vocab"]) for r in record["rows"]}
    assert len(ratios) >= 30 and len({r["vocab"] for r in record["rows"]}) >= 3
    off = {run: round(ratio, 2) for run, ratio in ratios.items() if not 1 / 1.5 <= ratio <= 1.5}
    assert not off, f"actual / estimate outside [0.67, 1.5]: {off}"
    # and over a whole sweep, within 25%
    for sweep in {r["sweep"] for r in record["rows"]}:
        rows = [r for r in record["rows"] if r["sweep"] == sweep]
        total = sum(cpu.seconds(r["flops"], r["tokens"], r["n_layer"], r["vocab"]) for r in rows)
        assert 0.8 <= sum(r["actual_s"] for r in rows) / total <= 1.25, sweep


def test_the_cost_model_terms():
    cpu = throughput_for("cpu", None)
    base = cpu.seconds(1e12, 1_000_000, n_layer=2, vocab_size=320)
    assert cpu.seconds(1e12, 1_000_000, n_layer=4, vocab_size=320) > base  # per-layer elementwise work
    assert cpu.seconds(1e12, 1_000_000, n_layer=2, vocab_size=4096) > 2 * base  # the output softmax
    assert cpu.seconds(2e12, 1_000_000, n_layer=2, vocab_size=320) > base
    # a measured rate replaces the model: FLOPs over it, nothing else
    measured = throughput_for("cpu", 0.5)
    assert measured.seconds(1e12, 1_000_000, 2, 320) == pytest.approx(2.0)
    # a GPU: FLOPs at 40% of the bf16 peak
    assert throughput_for("H100", None).seconds(989e12 * 0.4, 10**9, 24, 50304) == pytest.approx(1.0)
    assert Throughput(1e12).seconds(1e12, 10) == 1.0


def test_bad_measured_rate_is_one_line():
    from train.plan.errors import ConfigError
    with pytest.raises(ConfigError, match="sweep.effective_tflops: must be a positive"):
        throughput_for("cpu", float("nan"))
