"""The memory model (train/plan/memory.py) and the micro-batch it picks.

- The static state at 1B, counted on the meta device (no memory used): fp32 weights and
  gradients, AdamW's two moments as torch allocates them, and the matmul weights autocast casts.
- The activation estimate against the peak resident memory of one forward + backward on the CPU,
  measured by scripts/measure_memory.py in a fresh process; within 25% (docs/training.md lists
  the measured errors, 4-12% on these shapes).
- The planner's choice: it divides the per-rank batch, fits the device, and the dry run of a 1B
  run for an 80 GB GPU says so.
"""
import json
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, run_cli
from train.plan.memory import (GIB, MemoryPlanError, activation_bytes_per_token, choose_micro_batch, estimate_memory,
                          matmul_params, usable_bytes)
from train.plan.params import count_params
from train.plan.shapes import GPT2_PADDED_VOCAB, catalog_shape

sys.path.insert(0, str(REPO / "scripts"))
from measure_memory import measure  # noqa: E402


def test_static_state_at_1b_matches_torch_on_the_meta_device():
    torch = pytest.importorskip("torch")
    from train.model import Transformer
    shape = catalog_shape("llama-1b", vocab_size=GPT2_PADDED_VOCAB)
    with torch.device("meta"):
        model = Transformer(shape, attention="sdpa")
    params = list(model.parameters())
    total = sum(p.numel() for p in params)
    assert total == count_params(shape).total
    optimizer = torch.optim.AdamW(params, lr=1e-3, foreach=False)
    for p in params:
        p.grad = torch.zeros_like(p)
    optimizer.step()  # allocates the moments (on meta: shapes and dtypes only)
    weights = sum(p.numel() * p.element_size() for p in params)
    grads = sum(p.grad.numel() * p.grad.element_size() for p in params)
    moments = sum(v.numel() * v.element_size() for s in optimizer.state.values() for v in s.values() if v.dim() > 0)
    # autocast casts the weights of every matmul: the 2-D weights, less the embedding table (a lookup)
    cast = sum(p.numel() for n, p in model.named_parameters() if p.dim() == 2 and "embed_tokens" not in n)
    assert cast == matmul_params(shape)
    estimate = estimate_memory(shape, total, "bf16", world_size=1)
    assert estimate.static_bytes == weights + grads + moments + 2 * cast
    assert 18.0 < estimate.static_bytes / 1e9 < 19.5  # ~18.7 GB for 1.04B, as measured with bf16 autocast
    assert estimate_memory(shape, total, "fp32").static_bytes == weights + grads + moments


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux's peak-RSS reset")
@pytest.mark.parametrize("spec", [
    [2, 128, 32, 352, 2048, 256, 4, "fp32"],  # the CPU's fused fp32 functions
    [2, 128, 32, 352, 2048, 64, 4, "bf16"],   # the standard ops under autocast, as on CUDA
])
def test_activation_estimate_within_25_percent_of_the_measured_peak(spec):
    result = measure(spec)
    assert result["measured"] > 5e6  # a measurement, not noise
    assert 0.75 <= result["ratio"] <= 1.25, result


def test_activations_grow_with_each_dimension():
    shape = catalog_shape("llama-160m", vocab_size=GPT2_PADDED_VOCAB)
    base = activation_bytes_per_token(shape, "bf16")
    assert activation_bytes_per_token(shape, "fp32") > base
    assert activation_bytes_per_token(shape, "bf16", attention="math") > base  # the s x s softmax
    assert activation_bytes_per_token(shape, "bf16", attention="flash_attn") == base


def test_micro_batch_divides_and_fits():
    shape = catalog_shape("llama-1b", vocab_size=GPT2_PADDED_VOCAB)
    estimate = estimate_memory(shape, count_params(shape).total, "bf16")
    for gb in (40, 80, 141):
        micro = choose_micro_batch(240, estimate, gb)
        assert 240 % micro == 0
        assert estimate.peak_bytes(micro) <= usable_bytes(gb)
        bigger = [m for m in range(micro + 1, 241) if 240 % m == 0]
        assert not bigger or estimate.peak_bytes(bigger[0]) > usable_bytes(gb)  # the largest that fits
    assert choose_micro_batch(240, estimate, None) == 240  # no cap: the whole batch
    with pytest.raises(MemoryPlanError, match="device_memory_gb: one sequence needs"):
        choose_micro_batch(240, estimate, 24)


def test_dry_run_of_1b_for_an_80gb_gpu():
    proc = run_cli("-m", "train", "model=llama-1b", "budget.flops=1e20", "device_memory_gb=80", "dry_run=true")
    assert proc.returncode == 0, proc.stderr
    plan = json.loads(proc.stdout)
    assert plan["est_peak_memory_gb"] <= 80 and plan["device_memory_gb"] == 80
    assert plan["micro_batch_seqs"] * plan["grad_accum_steps"] * plan["world_size"] == plan["batch_seqs"]
    assert 1 < plan["micro_batch_seqs"] < plan["batch_seqs"] and plan["batch_seqs"] % 8 == 0
    # four ranks: the same global batch rule, a quarter of it per rank, and the DDP buckets
    proc = run_cli("-m", "train", "model=llama-1b", "budget.flops=1e20", "device_memory_gb=80", "world_size=4",
                   "dry_run=true")
    four = json.loads(proc.stdout)
    assert four["world_size"] == 4 and four["batch_seqs"] % 32 == 0
    assert four["micro_batch_seqs"] * four["grad_accum_steps"] * 4 == four["batch_seqs"]
    assert four["est_peak_memory_gb"] <= 80


def test_a_device_too_small_is_a_one_line_error():
    proc = run_cli("-m", "train", "model=llama-1b", "budget.flops=1e20", "device_memory_gb=12", "dry_run=true")
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: device_memory_gb: one sequence needs")
    assert len(proc.stderr.strip().splitlines()) == 1
    assert GIB == 2 ** 30


def test_out_of_memory_on_the_first_step_halves_the_micro_batch(tmp_path):
    """An injected CUDA out-of-memory error in the first step (after the gradients, before the
    update) makes the trainer retry that step with half the micro-batch; the global batch and so
    every step's result are those of a run planned with the smaller micro-batch from the start."""
    from tests.reliability.helpers import metrics, train
    backed_off, reference = tmp_path / "backed_off", tmp_path / "reference"
    proc = train(f"out_dir={backed_off}", "optim.micro_batch_seqs=8", fault="first-step:1:oom")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "fault injected: first-step:1: oom" in proc.stderr
    assert ("warning: out of memory at a micro-batch of 8 sequences; retrying step 1 with 4 x 4 accumulation steps "
            "(global batch unchanged)") in proc.stderr
    ref = train(f"out_dir={reference}", "optim.micro_batch_seqs=4")
    assert ref.returncode == 0, ref.stderr[-2000:]
    plan, ref_plan = (json.loads((d / "plan.json").read_text()) for d in (backed_off, reference))
    assert plan["batch_seqs"] == ref_plan["batch_seqs"] == 16 and plan["run_id"] == ref_plan["run_id"]
    rows, ref_rows = metrics(backed_off), metrics(reference)
    # training bit for bit: the same 4 x 4 sums; validation (its batches stay at 8 sequences) to rounding
    assert [{k: v for k, v in r.items() if k not in ("val_loss", "val_bpb")} for r in rows] == \
           [{k: v for k, v in r.items() if k not in ("val_loss", "val_bpb")} for r in ref_rows]
    assert [r["step"] for r in rows if "val_loss" in r] == [r["step"] for r in ref_rows if "val_loss" in r]
    assert [r["val_loss"] for r in rows if "val_loss" in r] == \
           pytest.approx([r["val_loss"] for r in ref_rows if "val_loss" in r], rel=1e-6)


def test_a_run_planned_for_another_world_size_stops_with_one_line(tmp_path):
    proc = run_cli("-m", "train", "model.params=2e4", "budget.flops=5e9", "model.seq_len=64", "data.vocab_size=512",
                   "wandb.mode=disabled", "world_size=2", f"out_dir={tmp_path / 'run'}")
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("error: world_size: the run is planned for 2 processes but 1 are running; "
                                   "set world_size=1 (or leave it unset under torchrun)")
