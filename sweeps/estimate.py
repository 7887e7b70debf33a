"""Wall-time estimates for the plan table: FLOPs (6N+attn) over an effective training throughput,
plus a fixed cost per token that dominates for tiny models (elementwise ops, the vocabulary head's
softmax, the optimizer step shared over the batch)."""
from __future__ import annotations

from dataclasses import dataclass

# Effective training throughput by device kind: TFLOP/s (6N+attn convention) and seconds per
# token. The CPU figures were fitted to the demo sweep's runs on this project's 2-core CI machine
# (single-threaded tiny models, 2026-11-23: 1/tokens_per_s = 2.7us + FLOPs/2.7e10, within 15%
# over 12K-43K parameters). The GPU ones assume 40% MFU on the dense bf16 peak. Override the
# FLOP rate with sweep.effective_tflops=<measured>.
EFFECTIVE_TFLOPS = {"cpu": 0.027, "H100": 989 * 0.40, "A100": 312 * 0.40}
SECONDS_PER_TOKEN = {"cpu": 2.7e-6}


@dataclass(frozen=True)
class Throughput:
    flops_per_s: float
    seconds_per_token: float = 0.0

    def seconds(self, train_flops: float, tokens: int) -> float:
        return train_flops / self.flops_per_s + tokens * self.seconds_per_token


def throughput_for(device_kind: str, override_tflops: float | None) -> Throughput:
    if override_tflops is not None:
        if not 0 < override_tflops < float("inf"):  # also false for NaN
            from train.plan.errors import ConfigError
            raise ConfigError(f"sweep.effective_tflops: must be a positive TFLOP/s figure (the measured training "
                              f"throughput), got {override_tflops}; or leave it unset for the device table")
        return Throughput(override_tflops * 1e12)
    tflops = EFFECTIVE_TFLOPS.get(device_kind, EFFECTIVE_TFLOPS["H100"])
    return Throughput(tflops * 1e12, SECONDS_PER_TOKEN.get(device_kind, 0.0))


def detect_device_kind(device: str) -> str:
    """The kind the runs will train on: this machine's GPU, or an H100 when a GPU preset
    (device=cuda) is planned on a machine without one."""
    if device == "cpu":
        return "cpu"
    import os
    if not os.path.exists("/proc/driver/nvidia/version"):  # no NVIDIA driver: no GPU, and no torch import
        return "cpu" if device == "auto" else "H100"
    try:
        import torch
        if not torch.cuda.is_available():
            return "cpu" if device == "auto" else "H100"
        name = torch.cuda.get_device_name(0)
    except (ImportError, RuntimeError, AssertionError):
        return "cpu" if device == "auto" else "H100"
    return next((kind for kind in EFFECTIVE_TFLOPS if kind in name), "H100")


def format_seconds(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f}s"
    if seconds < 5400:
        return f"{seconds / 60:.1f}m"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"
