"""Wall-time estimates for the plan table: FLOPs (6N+attn) over an effective training throughput,
plus the costs that dominate tiny models: a fixed cost per run and per-token costs (elementwise
ops, the optimizer step shared over the batch, the vocabulary softmax)."""
from __future__ import annotations

from dataclasses import dataclass

# Effective training throughput by device kind. The CPU rows are fitted by
# scripts/calibrate_estimates.py (docs/performance.md, "Time estimates") to 33 runs of four small
# sweeps on this project's 2-core CI machine (AMD EPYC, one thread per run, 2026-12-03). For
# models this small the FLOPs are a minor cost: seconds = a fixed cost per run (model build, the
# final 65K-token evaluation, checkpoints) + per token a fixed cost, a cost per layer (the
# elementwise work of norms, rotary, SiLU and attention's softmax, which does not shrink with the
# width) and a cost per vocabulary entry (the output softmax and its gradient) + the FLOPs (6N+attn)
# at an effective rate. The GPU rows assume 40% MFU on the dense bf16 peak, nothing else.
# sweep.effective_tflops=<measured> replaces the whole model with FLOPs at that rate.
EFFECTIVE_TFLOPS = {"cpu": 0.10, "H100": 989 * 0.40, "A100": 312 * 0.40}
SECONDS_PER_TOKEN = {"cpu": 0.0}
SECONDS_PER_TOKEN_PER_LAYER = {"cpu": 5.25e-6}
SECONDS_PER_TOKEN_PER_VOCAB = {"cpu": 1.12e-8}
RUN_OVERHEAD_S = {"cpu": 0.0}


@dataclass(frozen=True)
class Throughput:
    flops_per_s: float
    seconds_per_token: float = 0.0
    seconds_per_token_per_layer: float = 0.0
    seconds_per_token_per_vocab: float = 0.0
    run_overhead_s: float = 0.0

    def seconds(self, train_flops: float, tokens: int, n_layer: int = 0, vocab_size: int = 0) -> float:
        per_token = (self.seconds_per_token + self.seconds_per_token_per_layer * n_layer
                     + self.seconds_per_token_per_vocab * vocab_size)
        return self.run_overhead_s + train_flops / self.flops_per_s + tokens * per_token

    def for_plan(self, plan, tokens: int | None = None) -> float:
        """A planned run's wall seconds; `tokens` for part of it (a WSD trunk or cooldown). A run
        over several data-parallel ranks shares its tokens among them."""
        tokens = plan.budget.tokens if tokens is None else tokens
        seconds = self.seconds(plan.flops_per_token["6N+attn"] * tokens, tokens, plan.shape.n_layer,
                               plan.shape.vocab_size)
        return seconds / max(1, plan.world_size or 1)


def throughput_for(device_kind: str, override_tflops: float | None) -> Throughput:
    if override_tflops is not None:
        if not 0 < override_tflops < float("inf"):  # also false for NaN
            from train.plan.errors import ConfigError
            raise ConfigError(f"sweep.effective_tflops: must be a positive TFLOP/s figure (the measured training "
                              f"throughput), got {override_tflops}; or leave it unset for the device table")
        return Throughput(override_tflops * 1e12)
    tflops = EFFECTIVE_TFLOPS.get(device_kind, EFFECTIVE_TFLOPS["H100"])
    return Throughput(tflops * 1e12, SECONDS_PER_TOKEN.get(device_kind, 0.0),
                      SECONDS_PER_TOKEN_PER_LAYER.get(device_kind, 0.0), SECONDS_PER_TOKEN_PER_VOCAB.get(device_kind, 0.0),
                      RUN_OVERHEAD_S.get(device_kind, 0.0))


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
