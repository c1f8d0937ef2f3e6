"""Learning-rate schedule: linear warm-up then cosine decay, stepped once per optimiser step.

The original team saw the validation loss jump for 25 epochs with a constant high learning rate; a short
linear warm-up from ~0 followed by a cosine decay to ``min_lr`` avoids that.
"""

from __future__ import annotations

import math

import torch


def warmup_cosine_factor(step: int, warmup_steps: int, total_steps: int, min_ratio: float) -> float:
    """Multiplier of the base learning rate at optimiser step ``step`` (0-based).

    Steps ``0 .. warmup_steps-1`` rise linearly from ``1/(warmup_steps+1)`` towards 1 (never exactly 0, so
    the first step moves the weights); then the factor follows half a cosine from 1 down to ``min_ratio``
    at ``total_steps``; beyond it stays at ``min_ratio``.
    """
    if total_steps <= 0:
        return 1.0
    warmup_steps = max(0, min(warmup_steps, total_steps))
    if step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    *,
    steps_per_epoch: int,
    epochs: int,
    warmup_epochs: float,
    base_lr: float,
    min_lr: float,
) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step ``LambdaLR`` over ``epochs * steps_per_epoch`` steps with ``warmup_epochs`` of warm-up."""
    total = max(1, int(epochs) * max(1, int(steps_per_epoch)))
    warmup = int(round(float(warmup_epochs) * max(1, int(steps_per_epoch))))
    min_ratio = 0.0 if base_lr <= 0 else min(1.0, max(0.0, min_lr / base_lr))
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_cosine_factor(step, warmup, total, min_ratio)
    )
