"""The memory model on CUDA (marked gpu, skipped without CUDA): the estimate bounds the measured
peak of a training step, the planned micro-batch fits the device, and the back-off works there.
The measured/estimated ratios are printed (pytest -s) for docs/performance.md."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from tests.reliability.helpers import train  # noqa: E402
from train.plan.memory import estimate_memory, usable_bytes  # noqa: E402
from train.plan.params import count_params  # noqa: E402
from train.plan.shapes import GPT2_PADDED_VOCAB, catalog_shape  # noqa: E402

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def measured_peak(shape, micro: int, compile_model: bool) -> int:
    """torch.cuda.max_memory_allocated over a second full step (bf16 autocast, fused AdamW)."""
    from train.model import Transformer
    from train.run.optim import make_optimizer
    torch.cuda.empty_cache()
    model = Transformer(shape, attention="auto").cuda()
    optimizer = make_optimizer(model, 1e-4, (0.9, 0.95), 1e-8, 0.1, fused=True)
    step_model = torch.compile(model) if compile_model else model
    x = torch.randint(0, shape.vocab_size, (micro, shape.seq_len), device="cuda")

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = step_model(x, x)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=False)

    step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    step()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated()
    del model, optimizer, step_model
    torch.cuda.empty_cache()
    return peak


@pytest.mark.parametrize("name,micro,compile_model", [("llama-70m", 4, False), ("llama-160m", 4, False),
                                                      ("llama-160m", 4, True)])
def test_estimate_bounds_the_measured_peak(name, micro, compile_model):
    shape = catalog_shape(name, vocab_size=GPT2_PADDED_VOCAB)
    estimate = estimate_memory(shape, count_params(shape).total, "bf16", compile=compile_model)
    peak = measured_peak(shape, micro, compile_model)
    ratio = estimate.peak_bytes(micro) / peak
    print(f"{name} micro {micro} compile {compile_model}: measured {peak / 2**30:.2f} GiB, "
          f"estimated {estimate.peak_bytes(micro) / 2**30:.2f} GiB, est./meas. {ratio:.2f}")
    assert 1.0 <= ratio <= 1.6


def test_the_planned_micro_batch_fits_the_device():
    from omegaconf import OmegaConf

    from train.config import TrainConfig
    from train.plan import make_plan
    cfg = OmegaConf.merge(OmegaConf.structured(TrainConfig),
                          {"model": {"name": "llama-410m", "seq_len": 2048}, "budget": {"flops": 3e19},
                           "device": "cuda", "data": {"vocab_size": 50257}})
    plan = make_plan(cfg)
    total_gb = torch.cuda.get_device_properties(0).total_memory / 2**30
    assert plan.device_memory_gb == pytest.approx(total_gb)
    assert plan.micro_batch_seqs * plan.grad_accum_steps == plan.budget.batch_seqs
    peak = measured_peak(plan.shape, plan.micro_batch_seqs, compile_model=False)
    print(f"llama-410m: micro {plan.micro_batch_seqs} on {total_gb:.0f} GiB: measured {peak / 2**30:.1f} GiB, "
          f"planned {plan.est_peak_memory_gb} GiB")
    assert peak <= usable_bytes(total_gb)
    assert peak <= plan.est_peak_memory_gb * 2**30


def test_out_of_memory_back_off_on_cuda(tmp_path):
    proc = train(f"out_dir={tmp_path / 'run'}", "device=cuda", "optim.micro_batch_seqs=8", fault="first-step:1:oom")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "retrying step 1 with 4 x 4 accumulation steps (global batch unchanged)" in proc.stderr
    assert "first step: peak memory" in proc.stdout and "at a micro-batch of 4 (planned: 8" in proc.stdout
