"""config -> shape -> params & FLOPs -> tokens -> steps: the whole plan of one run (no torch).

`make_plan` is what `python -m train dry_run=true` prints and what the sweep planner tabulates.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass

from train.plan.budget import BudgetPlan, plan_budget
from train.plan.errors import ConfigError
from train.plan.flops import check_convention, flops_per_token
from train.plan.hparams import check_schedule, peak_lr, target_batch_tokens, warmup_steps
from train.plan.memory import (DEFAULT_GPU_MEMORY_GB, GIB, choose_micro_batch, estimate_memory,
                               largest_divisor_at_most)
from train.plan.params import ParamCount, count_params
from train.plan.schedule import SchedulePlan, plan_fixed_batch, plan_schedule
from train.plan.shapes import (ModelShape, ShapeError, catalog_shape, head_dim_for, pad_vocab,
                          shape_from_params, swiglu_hidden)

# Bump when a change to the training code would change a run's result for the same config.
RUN_ID_VERSION = 2


@dataclass(frozen=True)
class RunPlan:
    shape: ModelShape
    params: ParamCount
    flops_per_token: dict[str, float]
    budget: BudgetPlan
    lr: float
    warmup_steps: int
    seed: int
    run_id: str
    # How the global batch runs (not part of the run id: it does not change the result).
    world_size: int = 1
    micro_batch_seqs: int = 1
    grad_accum_steps: int = 1
    est_peak_memory_gb: float = 0.0
    device_memory_gb: float | None = None  # the memory the micro-batch was sized for; None: no cap
    precision: str = "fp32"  # the resolved training precision (fp32 | bf16), part of the run id
    schedule: SchedulePlan = SchedulePlan()

    @property
    def end_step(self) -> int:
        """Where training stops: the last step, or for a WSD trunk its last branch step."""
        return self.schedule.branch_steps[-1] if self.schedule.is_trunk else self.budget.steps

    def to_dict(self) -> dict:
        return self.schedule.to_dict() | {
            "run_id": self.run_id,
            "shape": self.shape.to_dict(),
            "params": self.params.to_dict(),
            "flops_per_token": self.flops_per_token,
            "budget_flops": self.budget.budget_flops,
            "convention": self.budget.convention,
            "tokens": self.budget.tokens,
            "steps": self.budget.steps,
            "batch_seqs": self.budget.batch_seqs,
            "batch_tokens": self.budget.batch_tokens,
            "achieved_flops": self.budget.achieved_flops,
            "achieved_flops_by_convention": {k: v * self.budget.tokens for k, v in self.flops_per_token.items()},
            "tokens_per_param": self.budget.tokens / self.params.total,
            "lr": self.lr,
            "warmup_steps": self.warmup_steps,
            "seed": self.seed,
            "world_size": self.world_size,
            "micro_batch_seqs": self.micro_batch_seqs,
            "grad_accum_steps": self.grad_accum_steps,
            "est_peak_memory_gb": self.est_peak_memory_gb,
            "device_memory_gb": self.device_memory_gb,
            "precision": self.precision,
        }


def _positive(value, field: str) -> None:
    if value is None or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{field}: must be a positive finite number, got {value!r}")


def resolve_shape(model, vocab_size: int) -> ModelShape:
    """The shape from exactly one of: a catalog name, a parameter target, or an explicit d_model/n_layer."""
    chosen = [key for key in ("name", "params", "d_model") if model.get(key) is not None]
    if len(chosen) != 1:
        raise ConfigError(
            "model: give exactly one of model=<catalog name>, model.params=<N> or model.d_model+model.n_layer"
            + (f" (got {', '.join('model.' + k for k in chosen)})" if chosen else ""))
    _positive(model.seq_len, "model.seq_len")
    vocab = pad_vocab(vocab_size, model.vocab_multiple)
    if model.name is not None:
        return catalog_shape(model.name, vocab_size=vocab, seq_len=model.seq_len, tie_embeddings=model.tie_embeddings)
    if model.params is not None:
        _positive(model.params, "model.params")
        return shape_from_params(float(model.params), vocab, model.seq_len, model.tie_embeddings, model.aspect_ratio)
    if model.n_layer is None:
        raise ConfigError("model.n_layer: an explicit shape needs model.n_layer with model.d_model")
    head_dim = model.head_dim or head_dim_for(model.d_model)
    if model.d_model % head_dim:
        raise ShapeError(f"model.head_dim: {head_dim} does not divide model.d_model {model.d_model}")
    return ModelShape(n_layer=model.n_layer, d_model=model.d_model, n_head=model.d_model // head_dim,
                      head_dim=head_dim, d_ff=model.d_ff or swiglu_hidden(model.d_model),
                      vocab_size=vocab, seq_len=model.seq_len, tie_embeddings=model.tie_embeddings)


def run_id_for(identity: dict) -> str:
    """A stable id: the hash of everything that determines the run's result."""
    blob = json.dumps(identity | {"version": RUN_ID_VERSION}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


PRECISIONS = ("auto", "fp32", "bf16")


def _cuda_present() -> bool:
    """Whether torch would find CUDA, without importing torch when it is not loaded yet (a dry run
    stays fast): an NVIDIA driver, visible devices and a CUDA build of torch."""
    import sys
    if "torch" in sys.modules:
        return sys.modules["torch"].cuda.is_available()
    import os
    from importlib import metadata
    from pathlib import Path
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    if not Path("/proc/driver/nvidia/version").exists():
        return False
    try:
        return "+cpu" not in metadata.version("torch")
    except metadata.PackageNotFoundError:
        return False


def resolve_precision(precision: str, device: str) -> str:
    """fp32 or bf16: what `precision` trains in on `device` (auto is bf16 on CUDA, else fp32,
    as train.run.device.pick_dtype picks it)."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision: unknown value {precision!r}; choose auto, fp32 or bf16")
    if precision != "auto":
        return precision
    if device == "auto":
        return "bf16" if _cuda_present() else "fp32"
    return "bf16" if str(device).startswith("cuda") else "fp32"


def resolve_world_size(cfg) -> int:
    """world_size, or torchrun's WORLD_SIZE when it is not set, else 1."""
    world = cfg.get("world_size")
    if world is None:
        try:
            world = int(os.environ.get("WORLD_SIZE", "1"))
        except ValueError:
            world = 1
    if not isinstance(world, int) or world < 1:
        raise ConfigError(f"world_size: must be a positive number of processes, got {world!r}")
    return world


def memory_target(cfg) -> tuple[str, float | None]:
    """The device kind a run is planned for and the memory (GiB) its micro-batch must fit; None:
    no cap. device_memory_gb wins; else a CUDA device's total memory; a device=cuda run planned
    on a machine without a GPU is planned for an 80 GB H100; the CPU has no cap."""
    device = str(cfg.get("device", "auto"))
    gb = cfg.get("device_memory_gb")
    if gb is not None:
        _positive(gb, "device_memory_gb")
        return ("cpu" if device == "cpu" else "cuda"), float(gb)
    if device.startswith(("cpu", "mps")):
        return "cpu", None
    detected = _cuda_memory_gb(device)
    if detected is not None:
        return "cuda", detected
    if device.startswith("cuda"):
        return "cuda", DEFAULT_GPU_MEMORY_GB
    return "cpu", None


def _cuda_memory_gb(device: str) -> float | None:
    """Total memory of the CUDA device a run would use; None without one. Loads torch only when
    an NVIDIA driver is present, so planning on a CPU machine stays fast."""
    if not os.path.exists("/proc/driver/nvidia/version") or os.environ.get("CUDA_VISIBLE_DEVICES") == "":
        return None
    from train.run.device import cuda_memory_gb
    return cuda_memory_gb(device)


def make_plan(cfg, precision: str | None = None) -> RunPlan:
    """The run's plan, for its world size (world_size, or torchrun's): a dry run with the same
    world size shows what torchrun trains. The global batch is a whole multiple of the world size
    (and of optim.batch_multiple), of 8 x the world size wherever the budget tolerance allows, and
    splits on every rank into micro-batches sized to the device's memory (train/plan/memory.py).

    `precision` is the precision the run really trains in (fp32 or bf16); None resolves
    cfg.precision for the device the plan is for (see resolve_precision)."""
    if cfg.budget.flops is None:
        raise ConfigError("budget.flops: required (e.g. budget.flops=3e11)")
    _positive(cfg.budget.flops, "budget.flops")
    convention = check_convention(cfg.budget.convention)
    shape = resolve_shape(cfg.model, cfg.data.vocab_size)
    params = count_params(shape)
    per_token = flops_per_token(shape)
    budget_flops = float(cfg.budget.flops)
    opt = cfg.optim
    world = resolve_world_size(cfg)
    if opt.batch_multiple < 1:
        raise ConfigError(f"optim.batch_multiple: must be at least 1, got {opt.batch_multiple}")
    multiple = math.lcm(opt.batch_multiple, world)
    wsd = cfg.get("wsd") or {}
    if wsd.get("batch_seqs") is not None:  # a WSD sweep's size: one batch for the trunk and all its branches
        budget = plan_fixed_batch(budget_flops, per_token[convention], convention, shape.seq_len, wsd.batch_seqs,
                                  min_steps=cfg.budget.min_steps, tolerance=cfg.budget.tolerance,
                                  batch_multiple=multiple)
    else:
        batch_target = target_batch_tokens(opt.batch_rule, budget_flops, opt.batch_tokens)
        budget = plan_budget(budget_flops, per_token[convention], convention, shape.seq_len, batch_target,
                             min_steps=cfg.budget.min_steps, tolerance=cfg.budget.tolerance,
                             batch_multiple=multiple, preferred_multiple=8 * world)
    lr = peak_lr(opt.lr_rule, budget_flops, params.total, opt.lr_constant, dict(opt.lr_table or {}), opt.lr)
    check_schedule(opt)
    warmup = wsd.get("warmup_steps") or warmup_steps(budget.steps, opt.warmup_fraction, opt.warmup_max_steps)
    schedule = plan_schedule(cfg, budget.steps, warmup)
    # the device kind the plan is for (a device_memory_gb plan on a CPU box is for a GPU) fixes
    # what precision=auto trains in; the micro-batch must fit that device's memory
    kind, memory_gb = memory_target(cfg)
    precision = precision or resolve_precision(cfg.precision, "cuda" if kind == "cuda" else cfg.device)
    from train.data.config import identity_items  # data fields added later count only when set
    identity = {
        "precision": precision,
        "shape": shape.to_dict(), "budget": budget.to_dict(), "lr": lr, "warmup": warmup, "seed": cfg.seed, "eval_tokens": cfg.eval_tokens,
        "optim": {k: opt[k] for k in ("beta1", "beta2", "eps", "weight_decay", "grad_clip", "final_lr_fraction")},
        "data": identity_items({k: v for k, v in _as_dict(cfg.data).items()
                                if k not in ("cache_dir", "num_proc", "unique_tokens")}),
    } | schedule.identity()
    # micro-batches: the requested size (optim.micro_batch_seqs), else the largest that fits
    compile_ = cfg.get("compile")
    attention = cfg.model.get("attention", "auto")
    estimate = estimate_memory(shape, params.total, precision,
                               attention="flash_attn" if attention == "flash_attn" else "sdpa",
                               compile=kind == "cuda" if compile_ is None else bool(compile_), world_size=world,
                               fused_optimizer=kind == "cuda", cpu_fused=kind == "cpu" and precision == "fp32")
    per_rank = budget.batch_seqs // world
    requested = opt.get("micro_batch_seqs")
    if requested:
        micro = largest_divisor_at_most(per_rank, int(requested))
    else:
        micro = choose_micro_batch(per_rank, estimate, memory_gb)
    return RunPlan(shape=shape, params=params, flops_per_token=per_token, budget=budget, lr=lr,
                   warmup_steps=warmup, seed=cfg.seed, run_id=run_id_for(identity), world_size=world,
                   micro_batch_seqs=micro, grad_accum_steps=per_rank // micro,
                   est_peak_memory_gb=round(estimate.peak_bytes(micro) / GIB, 2), device_memory_gb=memory_gb,
                   precision=precision, schedule=schedule)


def _as_dict(node) -> dict:
    try:
        from omegaconf import OmegaConf
        return OmegaConf.to_container(node, resolve=True)
    except ValueError:
        from dataclasses import asdict
        return asdict(node)
