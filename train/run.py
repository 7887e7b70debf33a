"""One training run at a fixed FLOP budget: set up, resume, train, evaluate, write the result."""
from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

from train import distributed
from train.checkpoint import load_latest, save_checkpoint
from train.data import DataConfig, check_repeats, prepare_data
from train.device import describe, peak_flops, pick_device, pick_dtype
from train.loop import Trainer
from train.model import Transformer
from train.optim import make_optimizer
from train.config import ConfigError
from train.plan import RunPlan, make_plan
from train.rundir import MetricsLog, atomic_write_bytes, atomic_write_json, environment, read_result


def say(message: str) -> None:
    print(message, flush=True)


def run_dir_for(cfg, plan: RunPlan) -> Path:
    return Path(cfg.out_dir) if cfg.out_dir else Path("runs") / plan.run_id


def run_training(cfg) -> dict | None:
    device = pick_device(cfg.device)
    world = distributed.init_world(device.type)
    if world.size > 1 and device.type == "cuda":
        device = torch.device("cuda", world.local_rank)
    plan = make_plan(cfg)
    if plan.budget.batch_seqs % world.size:
        raise ConfigError(f"optim.batch_multiple: the global batch of {plan.budget.batch_seqs} sequences does not "
                          f"split over {world.size} processes; set optim.batch_multiple={world.size}")
    run_dir = run_dir_for(cfg, plan)
    finished = read_result(run_dir)
    if finished is not None and finished["status"] != "failed":  # failed runs are retried
        say(f"run {plan.run_id}: already {finished['status']} in {run_dir}; nothing to do")
        return finished
    dtype = pick_dtype(cfg.precision, device)

    # Data: rank 0 prepares (and caches) first, the others then read the cache.
    data_cfg = DataConfig.from_any(cfg.data)
    if world.is_main:
        prepared = prepare_data(data_cfg)
    distributed.barrier(world)
    if not world.is_main:
        prepared = prepare_data(data_cfg)
    if prepared.vocab_size > plan.shape.vocab_size:
        from train.data import DataError
        raise DataError(f"data.vocab_size: the prepared data has {prepared.vocab_size} token ids but the "
                        f"model's vocabulary is {plan.shape.vocab_size}")

    if world.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True).encode())
        atomic_write_json(run_dir / "plan.json", plan.to_dict())
        atomic_write_json(run_dir / "env.json", environment(describe(device)) | {"world_size": world.size})

    torch.manual_seed(cfg.seed)
    model = Transformer(plan.shape, attention=cfg.model.attention).to(device)
    optimizer = make_optimizer(model, plan.lr, (cfg.optim.beta1, cfg.optim.beta2), cfg.optim.eps,
                               cfg.optim.weight_decay, fused=device.type == "cuda")
    trainer = Trainer(cfg=cfg, plan=plan, model=model, optimizer=optimizer, prepared=prepared, device=device,
                      dtype=dtype, world=world, run_dir=run_dir, peak_flops=peak_flops(device, cfg.peak_tflops))
    check_repeats(plan.budget.tokens, trainer.batches.unique_tokens, data_cfg.repeat_policy)

    state = load_latest(run_dir)
    if state is not None:
        trainer.load_state(state)
        say(f"run {plan.run_id}: resuming from step {trainer.step}/{plan.budget.steps}")
    elif world.is_main:
        MetricsLog(run_dir / "metrics.jsonl").truncate_after(-1)

    say(f"run {plan.run_id}: {plan.params.total:,} params ({plan.shape.n_layer}x{plan.shape.d_model}), "
        f"{plan.budget.tokens:,} tokens in {plan.budget.steps} steps of {plan.budget.batch_tokens:,}, "
        f"lr {plan.lr:.3g}, C={plan.budget.budget_flops:.3g} ({plan.budget.convention}) on {describe(device)} "
        f"[{str(dtype).removeprefix('torch.')}] -> {run_dir}")
    try:
        outcome = trainer.train()
    except Exception as error:
        if world.is_main:  # recorded so that the sweep reruns it; no loss is recorded
            atomic_write_json(run_dir / "result.json", {"status": "failed", "run_id": plan.run_id,
                                                        "reason": f"{type(error).__name__}: {error}"})
        raise
    result = None
    if world.is_main:
        result = write_result(run_dir, plan, outcome)
        say(f"run {plan.run_id}: {result['status']}; final val loss {result['final_val_loss']:.4f}, "
            f"train loss {result['final_train_loss']:.4f}, {result['wall_s']:.1f}s")
    distributed.shutdown(world)
    return result


def write_result(run_dir: Path, plan: RunPlan, outcome: dict) -> dict:
    tokens = outcome["tokens"]
    result = {
        "status": outcome["status"],
        "reason": outcome.get("reason"),
        "run_id": plan.run_id,
        "seed": plan.seed,
        "budget_flops": plan.budget.budget_flops,
        "convention": plan.budget.convention,
        "params": plan.params.to_dict(),
        "shape": plan.shape.to_dict(),
        "tokens": tokens,
        "steps": outcome["step"],
        "flops": {name: per_token * tokens for name, per_token in plan.flops_per_token.items()},
        "lr": plan.lr,
        "final_val_loss": outcome["val_loss"],
        "final_train_loss": outcome["train_loss"],
        "wall_s": outcome["wall_s"],
        "train_wall_s": outcome["train_wall_s"],
    }
    for key in ("final_val_loss", "final_train_loss"):
        if result[key] is not None and not math.isfinite(result[key]):
            result[key] = None
    atomic_write_json(run_dir / "result.json", result)
    return result
