"""GPU paths: the flash-attn guard (runs here, on stand-in packages), and checks marked `gpu` that
need CUDA (skipped without it): bf16 + torch.compile + a flash attention kernel, and 2-GPU DDP with
gradient accumulation against one GPU."""
from __future__ import annotations

import json
import sys
import textwrap

import pytest
import torch

from tests.conftest import run_cli
from train.model import Transformer, flash_attn_available, flash_attn_problem
from train.plan.shapes import ModelShape

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
needs_two_gpus = pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA devices")
SHAPE = ModelShape(n_layer=2, d_model=128, n_head=2, head_dim=64, d_ff=352, vocab_size=512, seq_len=128)
TINY = ["model.params=1e6", "model.seq_len=128", "wandb.mode=disabled", "optim.batch_tokens=768",
        "eval_tokens=8192", "eval_every=5"]


# --- the flash-attn guard (CPU) -------------------------------------------------------------

def fake_flash_attn(tmp_path, monkeypatch, body: str) -> None:
    """A `flash_attn` package on sys.path with the given __init__.py."""
    package = tmp_path / "flash_attn"
    package.mkdir()
    (package / "__init__.py").write_text(textwrap.dedent(body))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "flash_attn", raising=False)


def test_a_wheel_built_for_another_torch_is_caught_at_import(tmp_path, monkeypatch):
    fake_flash_attn(tmp_path, monkeypatch, """
        raise ImportError("flash_attn_2_cuda.cpython-311-x86_64-linux-gnu.so: undefined symbol: _ZN3c104cuda9SetDeviceEi")
    """)
    problem = flash_attn_problem(device="cpu")
    assert problem.startswith("flash-attn does not work here (ImportError: flash_attn_2_cuda") and "undefined symbol" in problem


def test_a_kernel_that_fails_at_its_first_call_is_caught(tmp_path, monkeypatch):
    fake_flash_attn(tmp_path, monkeypatch, """
        def flash_attn_func(q, k, v, causal=False):
            raise RuntimeError("FlashAttention only supports Ampere GPUs or newer.")
    """)
    assert flash_attn_problem(device="cpu") == ("flash-attn does not work here (RuntimeError: FlashAttention only "
                                                "supports Ampere GPUs or newer.)")


def test_a_working_package_passes_the_guard(tmp_path, monkeypatch):
    fake_flash_attn(tmp_path, monkeypatch, """
        def flash_attn_func(q, k, v, causal=False):
            assert causal and q.shape == k.shape == v.shape
            return q
    """)
    assert flash_attn_problem(device="cpu") is None


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only answer")
def test_without_cuda_flash_attn_is_off_and_an_explicit_request_is_one_line(tmp_path):
    assert not flash_attn_available()
    assert not Transformer(SHAPE).model.layers[0].self_attn.use_flash_attn  # auto falls back to SDPA
    proc = run_cli("-m", "train", *TINY, "budget.flops=1.5e11", "model.attention=flash_attn", f"out_dir={tmp_path}/r")
    assert proc.returncode == 2 and proc.stderr == ("error: model.attention: flash_attn requested but CUDA is not "
                                                    "available; use model.attention=auto (flash-attn where it works, "
                                                    "else SDPA) or sdpa\n"), proc.stderr


# --- on CUDA --------------------------------------------------------------------------------

@pytest.mark.gpu
@needs_cuda
def test_bf16_compile_and_a_flash_kernel():
    """One bf16 training step of the compiled model runs a flash attention kernel: flash-attn
    when it works here, else SDPA restricted to its flash backend (which raises when it cannot
    take the inputs). Its loss is the fp32 model's within bf16 rounding."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    torch.manual_seed(0)
    model = Transformer(SHAPE).cuda()
    x = torch.randint(0, SHAPE.vocab_size, (4, SHAPE.seq_len), device="cuda")
    with torch.no_grad():
        reference = float(model(x, x))
    compiled = torch.compile(model)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        if model.model.layers[0].self_attn.use_flash_attn:
            assert flash_attn_available()
            loss = compiled(x, x)
        else:
            with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                loss = compiled(x, x)
    loss.backward()
    assert torch.isfinite(loss) and abs(float(loss) - reference) / reference < 2e-2
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.gpu
@needs_cuda
def test_a_bf16_compiled_run_on_cuda(tmp_path):
    run_dir = tmp_path / "run"
    proc = run_cli("-m", "train", *TINY, "budget.flops=1.5e11", "device=cuda", "precision=bf16", "compile=true",
                   f"out_dir={run_dir}", timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((run_dir / "result.json").read_text())
    assert result["status"] == "completed"
    assert json.loads((run_dir / "plan.json").read_text())["precision"] == "bf16"
    assert "bfloat16" in proc.stdout
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
    if "mfu" in rows[-1]:  # a GPU in the peak table
        assert 0 < rows[-1]["mfu"] < 1


@pytest.mark.gpu
@needs_two_gpus
def test_two_gpus_with_accumulation_match_one(tmp_path):
    """2 GPUs x 3 micro-batches of one sequence (fp32, no compile, so the comparison is tight)
    match one GPU with the whole batch; then the same with bf16 and compile completes."""
    common = [*TINY, "budget.flops=1.5e11", "device=cuda", "precision=fp32", "compile=false"]
    one = run_cli("-m", "train", *common, f"out_dir={tmp_path}/one", timeout=900)
    assert one.returncode == 0, one.stderr[-3000:]
    two = run_cli("-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "train", *common,
                  "optim.micro_batch_seqs=1", f"out_dir={tmp_path}/two", timeout=900)
    assert two.returncode == 0, two.stderr[-3000:]
    rows = [[json.loads(line) for line in (tmp_path / d / "metrics.jsonl").read_text().splitlines()]
            for d in ("one", "two")]
    diffs = [abs(a["train_loss"] - b["train_loss"]) / a["train_loss"] for a, b in zip(*rows)]
    assert len(diffs) == len(rows[0]) and max(diffs[:10]) < 1e-4 and max(diffs) < 5e-3, diffs
    fast = run_cli("-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "train", *TINY,
                   "budget.flops=1.5e11", "device=cuda", "precision=bf16", "compile=true", "optim.micro_batch_seqs=1",
                   f"out_dir={tmp_path}/fast", timeout=900)
    assert fast.returncode == 0, fast.stderr[-3000:]
    assert json.loads((tmp_path / "fast" / "result.json").read_text())["status"] == "completed"
