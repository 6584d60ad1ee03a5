"""Learning-rate schedules as pure functions of the step (nothing to save beyond the step)."""
from __future__ import annotations

import math

from torch.optim import Optimizer

from keep.engine.config import OptimConfig


def lr_at(cfg: OptimConfig, step: int, total: int) -> float:
    """Learning rate for (0-based) ``step`` of a ``total``-step run."""
    if cfg.warmup_iters and step < cfg.warmup_iters:
        return cfg.lr * (step + 1) / cfg.warmup_iters
    if cfg.schedule == "cosine":
        span = max(total - cfg.warmup_iters, 1)
        progress = min((step - cfg.warmup_iters) / span, 1.0)
        return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * progress))
    if cfg.schedule == "multistep":
        return cfg.lr * cfg.gamma ** sum(step >= m for m in cfg.milestones)
    return cfg.lr


class LRSchedule:
    """Sets an optimiser's learning rate from the step; ``state_dict`` records the last step."""

    def __init__(self, optimizer: Optimizer, cfg: OptimConfig, total: int):
        self.optimizer, self.cfg, self.total, self.step_count = optimizer, cfg, total, 0

    def apply(self, step: int) -> float:
        lr = lr_at(self.cfg, step, self.total)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.step_count = step
        return lr

    def state_dict(self) -> dict:
        return {"step": self.step_count}

    def load_state_dict(self, state: dict) -> None:
        self.apply(int(state["step"]))
