"""Training memory of one rank in closed form, and the micro-batch that fits a device (no torch).

The model counts the bytes a training step holds at its peak: the static state and, per sequence
of the micro-batch, the activations that autograd keeps for the backward plus the transient
buffers of the output head (docs/training.md, "Memory model", has the derivation and the
measured error):

- static, per parameter: fp32 weights (4 B), fp32 gradients (4 B) and AdamW's two moments
  (8 B); under bf16 autocast also the bf16 copy of every matmul weight (2 B), which autocast
  casts once per forward and the backward keeps; with DDP (world size > 1) a gradient bucket
  copy (4 B).
- per token and layer (d = d_model, f = d_ff, h = heads), with e bytes per activation (2 under
  bf16 autocast, 4 in fp32):
    RMSNorm x 2   its fp32 input and normalised output, and the matmul input it feeds (in e)
    attention     rotated q|k|v (3d), the kernel's output and its reshaped copy (2d), the
                  log-sum-exp (4 B per head); the `math` kernel also keeps the s x s softmax
    SwiGLU        gate|up (2f), silu(gate) (f) and the product fed to the down projection (f)
  On the CPU in fp32 the model's fused autograd functions keep a slightly different set (see
  CPU_FP32 below).
- the head, per token: the final norm as above, and 12 x 4 B per vocabulary entry at the
  backward's start: the fp32 log-softmax kept by the loss plus the gradient buffers of the
  logits (on the CPU's fused fp32 loss: the logits and their softmax during the forward).
- the optimizer step runs after the activations are freed: static state plus the temporaries
  of a non-fused AdamW (two fp32 buffers per parameter; the fused CUDA AdamW needs none).

torch.compile fuses and recomputes elementwise ops, so it keeps less than this eager count: the
estimate is used unchanged as an upper bound under compile. Per-device overhead (CUDA context,
cuBLAS workspaces, allocator fragmentation) is left to the headroom of `usable_bytes`.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from train.plan.errors import MemoryPlanError

GIB = 2 ** 30
# Plan to use at most this share of the device's memory, less a fixed reserve for the CUDA
# context, library workspaces and the caching allocator's fragmentation.
HEADROOM_FRACTION = 0.90
RESERVE_BYTES = 1 * GIB
# A GPU preset planned on a machine without a GPU is planned for an 80 GB H100.
DEFAULT_GPU_MEMORY_GB = 80.0
ATTENTION_KERNELS = ("sdpa", "flash_attn", "math")


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes at the peak of a training step: static + per_seq x micro_batch (or the optimizer step)."""
    static_bytes: float          # weights, gradients, AdamW moments, bf16 weight copies, DDP buckets
    per_seq_bytes: float         # activations kept for the backward + the head's transients, per sequence
    optimizer_step_bytes: float  # static state + the optimizer's temporaries (activations freed)
    step_transient_bytes: float = 0.0  # weight-sized buffers of the forward + backward

    def activation_peak_bytes(self, micro_batch_seqs: int) -> float:
        """Above the static state, during the forward + backward of one micro-batch."""
        return self.per_seq_bytes * micro_batch_seqs + self.step_transient_bytes

    def peak_bytes(self, micro_batch_seqs: int) -> float:
        return max(self.static_bytes + self.activation_peak_bytes(micro_batch_seqs), self.optimizer_step_bytes)

    def to_dict(self) -> dict:
        return asdict(self)


def matmul_params(shape) -> int:
    """Weights that go through a matmul (and so get a bf16 copy under autocast): the blocks'
    projections and the output head; not the token embedding lookup, not the norms."""
    width = shape.n_head * shape.head_dim
    return shape.n_layer * (4 * shape.d_model * width + 3 * shape.d_model * shape.d_ff) + shape.vocab_size * shape.d_model


def activation_bytes_per_token(shape, precision: str, attention: str = "sdpa", cpu_fused: bool = False) -> float:
    """Activation bytes per token of a micro-batch at the peak of forward + backward."""
    if precision not in ("fp32", "bf16"):
        raise MemoryPlanError(f"precision: the memory model knows fp32 and bf16, got {precision!r}")
    if attention not in ATTENTION_KERNELS:
        raise MemoryPlanError(f"model.attention: the memory model knows {', '.join(ATTENTION_KERNELS)}, got {attention!r}")
    d, f, h, s, vocab = shape.d_model, shape.d_ff, shape.n_head, shape.seq_len, shape.vocab_size
    width = shape.n_head * shape.head_dim
    e = 2 if precision == "bf16" else 4
    lse = 4 * h
    if cpu_fused and precision == "fp32":
        # train/model/transformer.py's CPU fp32 functions: each norm keeps its normalised output only, the
        # rotary q|k|v is kept for the attention, SwiGLU keeps gate|up, silu(gate) and the product;
        # the rotary tables are expanded over the heads once per step.
        norms = 2 * 4 * d
        attn = 4 * (3 * width + 2 * width) + lse
        mlp = 4 * (2 * f + f + f)
        head_kept = 4 * d + 4 * d + 2 * 4 * 3 * width   # final norm, grad_hidden; rotary tables
        head_transient = 8 * vocab                       # the logits and their softmax (forward)
    else:
        # fp32 input and normalised output (4 B each), plus the input of the next matmul in e bytes
        # (under bf16 the cast copy; in fp32 the weighted output is a tensor of its own)
        norms = 2 * (4 * d + 4 * d + e * d)
        attn = e * (3 * width + 2 * width) + lse
        mlp = e * (2 * f + f + f)
        head_kept = (4 * d + 4 * d + e * d) + 4 * vocab  # final norm; the fp32 log-softmax
        head_transient = 8 * vocab                       # the logits' gradient buffers (backward)
    if attention == "math":
        attn += 2 * e * h * s  # the s x s softmax kept, and the scores it came from
    # the last layer's backward: gradients of gate|up and the product, of its input and output
    layer_transient = e * 3 * f + 4 * 2 * d
    return shape.n_layer * (norms + attn + mlp) + head_kept + max(head_transient, layer_transient)


def step_transient_bytes(shape, precision: str, cpu_fused: bool = False) -> float:
    """Weight-sized buffers of one forward + backward whatever the micro-batch: the output head's
    weight gradient before it is added to .grad (bf16, then fp32); on the CPU's fused fp32 path
    the norm-scaled weights and the head's weight gradient, computed in the forward."""
    head = shape.vocab_size * shape.d_model
    if cpu_fused and precision == "fp32":
        width = shape.n_head * shape.head_dim
        scaled = shape.n_layer * (3 * width * shape.d_model + 2 * shape.d_ff * shape.d_model)
        return 4.0 * (scaled + 3 * head)
    return (2.0 + 4.0) * head if precision == "bf16" else 4.0 * head


def estimate_memory(shape, params_total: int, precision: str, attention: str = "sdpa", compile: bool = False,
                    world_size: int = 1, fused_optimizer: bool = True, cpu_fused: bool = False) -> MemoryEstimate:
    """The peak-memory model of one rank (see the module docstring). `compile` does not lower the
    estimate: the eager count is an upper bound for compiled code."""
    del compile  # an upper bound under compile (module docstring)
    static = 16.0 * params_total
    if precision == "bf16":
        static += 2.0 * matmul_params(shape)
    if world_size > 1:
        static += 4.0 * params_total  # DDP's gradient buckets
    optimizer_step = 16.0 * params_total + (0.0 if fused_optimizer else 8.0 * params_total)
    if world_size > 1:
        optimizer_step += 4.0 * params_total
    per_seq = activation_bytes_per_token(shape, precision, attention, cpu_fused) * shape.seq_len
    return MemoryEstimate(static_bytes=static, per_seq_bytes=per_seq, optimizer_step_bytes=optimizer_step,
                          step_transient_bytes=step_transient_bytes(shape, precision, cpu_fused))


def usable_bytes(device_memory_gb: float) -> float:
    """What the planner lets a run use of a device with this much memory (GiB)."""
    return HEADROOM_FRACTION * device_memory_gb * GIB - RESERVE_BYTES


def divisors_descending(n: int) -> list[int]:
    small = [k for k in range(1, math.isqrt(n) + 1) if n % k == 0]
    return sorted(set(small) | {n // k for k in small}, reverse=True)


def largest_divisor_at_most(n: int, limit: int) -> int:
    """The largest divisor of n that is at most limit (at least 1)."""
    return next(k for k in divisors_descending(n) if k <= max(1, limit))


def choose_micro_batch(per_rank_seqs: int, estimate: MemoryEstimate, device_memory_gb: float | None) -> int:
    """The largest micro-batch that divides the per-rank batch and fits the device with headroom;
    the whole per-rank batch when there is no memory cap."""
    if device_memory_gb is None:
        return per_rank_seqs
    budget = usable_bytes(device_memory_gb)
    for micro in divisors_descending(per_rank_seqs):
        if estimate.peak_bytes(micro) <= budget:
            return micro
    need = estimate.peak_bytes(1) / GIB
    raise MemoryPlanError(
        f"device_memory_gb: one sequence needs about {need:.1f} GB ({estimate.static_bytes / GIB:.1f} GB of "
        f"weights, gradients and optimizer state + {estimate.per_seq_bytes / GIB:.2f} GB of activations), more "
        f"than the {budget / GIB:.1f} GB usable of {device_memory_gb:g} GB; use a device with more memory, "
        f"more GPUs per run, or a smaller model.seq_len")
