"""Exponential moving average of a network's parameters *and* buffers (BatchNorm statistics,
spectral-norm vectors): ``ema = decay·ema + (1 − decay)·current`` for floating tensors, a copy
for the rest (integer counters).

Warm-up (``warmup=True``): after ``n`` updates the decay is ``min(decay, (1 + n) / (10 + n))``, so the
average forgets the random initial weights within the first hundred steps instead of carrying them
for ~1 / (1 - decay) steps (at 0.999, validation of an early checkpoint would mostly show the random
init). A function of the step only: nothing more to save for an exact resume."""
from __future__ import annotations

import copy

import torch
from torch import nn


class ModelEma:
    def __init__(self, model: nn.Module, decay: float, warmup: bool = False):
        self.decay, self.warmup = decay, warmup
        self.module = copy.deepcopy(model).eval().requires_grad_(False)

    def decay_at(self, updates: int) -> float:
        """The decay used by the update that follows ``updates`` earlier ones."""
        return min(self.decay, (1 + updates) / (10 + updates)) if self.warmup else self.decay

    @torch.no_grad()
    def update(self, model: nn.Module, updates: int = 0) -> None:
        """One EMA step towards ``model``; ``updates``: how many were done before (the step)."""
        decay = self.decay_at(updates)
        current = model.state_dict()
        for name, ema_value in self.module.state_dict().items():
            value = current[name].detach()
            if ema_value.is_floating_point():
                ema_value.lerp_(value.to(ema_value.dtype), 1.0 - decay)
            else:
                ema_value.copy_(value)

    def state_dict(self) -> dict:
        return self.module.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state)
