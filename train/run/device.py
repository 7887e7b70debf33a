"""Device, precision and the accelerator peak used for MFU."""
from __future__ import annotations

import torch

# Dense bf16 peak TFLOP/s by device name (vendor spec sheets, no sparsity). MFU uses the first
# entry whose key appears in torch.cuda.get_device_name(); `peak_tflops=` overrides it.
PEAK_BF16_TFLOPS = {
    "H200": 989.0,
    "H100 SXM": 989.0,
    "H100 80GB HBM3": 989.0,
    "H100 PCIe": 756.0,
    "H100": 989.0,
    "GH200": 989.0,
    "A100": 312.0,
    "A10G": 125.0,
    "L40S": 362.0,
    "L4": 121.0,
    "RTX 4090": 165.0,
    "RTX 3090": 71.0,
    "V100": 125.0,
}


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device: {name!r} requested but CUDA is not available")
    return device


def pick_dtype(precision: str, device: torch.device) -> torch.dtype:
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp32":
        return torch.float32
    raise ValueError(f"precision: unknown value {precision!r}; choose auto, fp32 or bf16")


# Below this width a CPU training step is a chain of small ops (the vocabulary head dominates):
# a second thread only adds synchronisation. Measured on the 2-core CI machine, a 30K-parameter
# model trained at 88K tokens/s with 1 thread and 20K with 2 (2-core CPU, `scripts/bench.py --threads`).
SINGLE_THREAD_BELOW_D_MODEL = 512


def configure_cpu_threads(device: torch.device, d_model: int, requested: int | None) -> int:
    """Set torch's intra-op threads for a CPU run and return the number used."""
    if device.type != "cpu":
        return torch.get_num_threads()
    if requested is not None:
        if requested < 1:
            raise ValueError(f"cpu_threads: must be at least 1, got {requested}")
        torch.set_num_threads(requested)
    elif d_model < SINGLE_THREAD_BELOW_D_MODEL:
        torch.set_num_threads(1)
    return torch.get_num_threads()


def peak_flops(device: torch.device, override_tflops: float | None) -> float | None:
    """Peak FLOP/s for MFU, or None where unknown (CPUs): then no MFU is logged."""
    if override_tflops is not None:
        return override_tflops * 1e12
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, tflops in PEAK_BF16_TFLOPS.items():
        if key in name:
            return tflops * 1e12
    return None


def describe(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return "cpu"


def cuda_memory_gb(name: str = "auto") -> float | None:
    """Total memory (GiB) of the CUDA device `name` would train on (under torchrun, the local
    rank's), or None without CUDA. The planner sizes micro-batches to it (train/plan/memory.py)."""
    if name.startswith(("cpu", "mps")) or not torch.cuda.is_available():
        return None
    import os
    index = int(name.split(":", 1)[1]) if ":" in name else int(os.environ.get("LOCAL_RANK", "0"))
    return torch.cuda.get_device_properties(index).total_memory / 2 ** 30
