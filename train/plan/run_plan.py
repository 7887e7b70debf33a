"""config -> shape -> params & FLOPs -> tokens -> steps: the whole plan of one run (no torch).

`make_plan` is what `python -m train dry_run=true` prints and what the sweep planner tabulates.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass

from train.plan.budget import BudgetPlan, plan_budget
from train.plan.errors import ConfigError
from train.plan.flops import check_convention, flops_per_token
from train.plan.hparams import peak_lr, target_batch_tokens, warmup_steps
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


def make_plan(cfg) -> RunPlan:
    """The run's plan. It does not depend on the world size, so a dry run shows what torchrun trains."""
    if cfg.budget.flops is None:
        raise ConfigError("budget.flops: required (e.g. budget.flops=3e11)")
    _positive(cfg.budget.flops, "budget.flops")
    convention = check_convention(cfg.budget.convention)
    shape = resolve_shape(cfg.model, cfg.data.vocab_size)
    params = count_params(shape)
    per_token = flops_per_token(shape)
    budget_flops = float(cfg.budget.flops)
    opt = cfg.optim
    wsd = cfg.get("wsd") or {}
    if wsd.get("batch_seqs") is not None:  # a WSD sweep's size: one batch for the trunk and all its branches
        budget = plan_fixed_batch(budget_flops, per_token[convention], convention, shape.seq_len, wsd.batch_seqs,
                                  min_steps=cfg.budget.min_steps, tolerance=cfg.budget.tolerance,
                                  batch_multiple=opt.batch_multiple)
    else:
        batch_target = target_batch_tokens(opt.batch_rule, budget_flops, opt.batch_tokens)
        budget = plan_budget(budget_flops, per_token[convention], convention, shape.seq_len, batch_target,
                             min_steps=cfg.budget.min_steps, tolerance=cfg.budget.tolerance,
                             batch_multiple=opt.batch_multiple)
    lr = peak_lr(opt.lr_rule, budget_flops, params.total, opt.lr_constant, dict(opt.lr_table or {}), opt.lr)
    warmup = wsd.get("warmup_steps") or warmup_steps(budget.steps, opt.warmup_fraction, opt.warmup_max_steps)
    schedule = plan_schedule(cfg, budget.steps, warmup)
    identity = {
        "shape": shape.to_dict(), "budget": budget.to_dict(), "lr": lr, "warmup": warmup, "seed": cfg.seed, "eval_tokens": cfg.eval_tokens,
        "optim": {k: opt[k] for k in ("beta1", "beta2", "eps", "weight_decay", "grad_clip", "final_lr_fraction")},
        "data": {k: v for k, v in _as_dict(cfg.data).items() if k not in ("cache_dir", "num_proc")},
    } | schedule.identity()
    return RunPlan(shape=shape, params=params, flops_per_token=per_token, budget=budget, lr=lr,
                   warmup_steps=warmup, seed=cfg.seed, run_id=run_id_for(identity), schedule=schedule)


def _as_dict(node) -> dict:
    try:
        from omegaconf import OmegaConf
        return OmegaConf.to_container(node, resolve=True)
    except ValueError:
        from dataclasses import asdict
        return asdict(node)
