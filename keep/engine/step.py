"""What a stage's ``training_step`` gets to run its backward passes: autocast and one call per
optimiser that does zero-grad, (scaled) backward, unscale + clip and step."""
from __future__ import annotations

import contextlib
from typing import Dict, Iterable

import torch
from torch.optim import Optimizer


class StepContext:
    def __init__(self, optimizers: Dict[str, Optimizer], params: Dict[str, Iterable[torch.nn.Parameter]],
                 scaler: torch.amp.GradScaler, amp: str, device: torch.device, grad_clip: Dict[str, float]):
        self.optimizers, self.params, self.scaler = optimizers, {k: list(v) for k, v in params.items()}, scaler
        self.amp, self.device, self.grad_clip = amp, device, grad_clip
        self.grad_norms: Dict[str, float] = {}  # pre-clipping norms of the last step, logged

    def autocast(self):
        if self.amp == "none":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.amp == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    def optimize(self, name: str, loss: torch.Tensor) -> None:
        """One optimiser step of ``name`` on ``loss``; gradients of its parameters start from zero."""
        optimizer = self.optimizers[name]
        optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.grad_clip.get(name, 0.0) > 0:
            self.scaler.unscale_(optimizer)
            norm = torch.nn.utils.clip_grad_norm_(self.params[name], self.grad_clip[name])
            self.grad_norms[name] = float(norm)
        self.scaler.step(optimizer)
