"""Wall-time estimates for the plan table: FLOPs (6N+attn) over an effective training throughput."""
from __future__ import annotations

# Effective training FLOP/s (6N+attn convention) by device kind. The CPU figure was measured on
# this project's 2-core CI machine with the demo's tiny models (scripts/bench.py); the GPU ones
# assume 40% MFU on the dense bf16 peak. Override with sweep.effective_tflops=<measured>.
EFFECTIVE_TFLOPS = {
    "cpu": 0.1,
    "H100": 989 * 0.40,
    "A100": 312 * 0.40,
}


def effective_flops_per_s(device_kind: str, override_tflops: float | None) -> float:
    if override_tflops is not None:
        if override_tflops <= 0:
            raise ValueError(f"sweep.effective_tflops: must be positive, got {override_tflops}")
        return override_tflops * 1e12
    return EFFECTIVE_TFLOPS.get(device_kind, EFFECTIVE_TFLOPS["H100"]) * 1e12


def detect_device_kind(device: str) -> str:
    if device == "cpu":
        return "cpu"
    try:
        import torch
        if device == "auto" and not torch.cuda.is_available():
            return "cpu"
        name = torch.cuda.get_device_name(0)
    except (ImportError, RuntimeError, AssertionError):
        return "cpu"
    return next((kind for kind in EFFECTIVE_TFLOPS if kind in name), "H100")


def format_seconds(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f}s"
    if seconds < 5400:
        return f"{seconds / 60:.1f}m"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"
