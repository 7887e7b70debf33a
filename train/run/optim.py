"""AdamW and the learning-rate schedule: linear warmup, then cosine decay to a floor, or (WSD)
the peak held constant and a 1-sqrt cooldown over the last steps to the same floor.

Either ends exactly at the run's last step, so every (C, N) point has its own complete
schedule; Chinchilla showed that points cut from a longer schedule are biased. A WSD branch
(train/plan/schedule.py) shares everything before its cooldown with its trunk.
"""
from __future__ import annotations

import math

import torch


def lr_at(step: int, total_steps: int, peak_lr: float, warmup: int, final_fraction: float,
          schedule: str = "cosine", cooldown_steps: int = 0) -> float:
    """LR for optimizer step `step` (0-based). Step total_steps-1 gets exactly final_fraction·peak.

    schedule="wsd": the peak from the end of the warmup to step total_steps - cooldown_steps (the
    first cooldown step still gets the peak), then peak·(f + (1-f)·(1 - sqrt(progress))), progress
    going from 0 to 1 over the cooldown's steps: the 1-sqrt shape of Hägele et al. (2024)."""
    if step < warmup:
        return peak_lr * (step + 1) / warmup
    if schedule == "wsd":
        start = total_steps - cooldown_steps
        if step < start:
            return peak_lr
        if cooldown_steps <= 1:
            return peak_lr * final_fraction
        progress = min((step - start) / (cooldown_steps - 1), 1.0)
        return peak_lr * (final_fraction + (1 - final_fraction) * (1 - math.sqrt(progress)))
    if schedule != "cosine":
        raise ValueError(f"optim.schedule: unknown schedule {schedule!r}")
    decay_steps = total_steps - warmup
    if decay_steps <= 1:
        return peak_lr * final_fraction
    progress = (step - warmup) / (decay_steps - 1)  # 0 at the first decay step, 1 at the last step
    cosine = 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    return peak_lr * (final_fraction + (1 - final_fraction) * cosine)


def make_optimizer(model: torch.nn.Module, lr: float, betas: tuple[float, float], eps: float,
                   weight_decay: float, fused: bool) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only: norms and 1-D weights are not decayed."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, fused=fused)
