"""AdamW and the learning-rate schedule: linear warmup, then cosine decay to a floor.

The cosine ends exactly at the run's last step, so every (C, N) point has its own complete
schedule; Chinchilla showed that points cut from a longer schedule are biased.
"""
from __future__ import annotations

import math

import torch


def lr_at(step: int, total_steps: int, peak_lr: float, warmup: int, final_fraction: float) -> float:
    """LR for optimizer step `step` (0-based). Step total_steps-1 gets exactly final_fraction·peak."""
    if step < warmup:
        return peak_lr * (step + 1) / warmup
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
