"""What a stage's ``training_step`` gets to run its backward passes: autocast and one call per
optimiser that does zero-grad, (scaled) backward, unscale + clip and step."""
from __future__ import annotations

import contextlib
import math
from typing import Callable, Dict, Iterable, List, Optional, Sequence

import torch
from torch.optim import Optimizer

from keep.engine.nonfinite import grad_norm


class StepContext:
    def __init__(self, optimizers: Dict[str, Optimizer], params: Dict[str, Iterable[torch.nn.Parameter]],
                 scaler: torch.amp.GradScaler, amp: str, device: torch.device, grad_clip: Dict[str, float]):
        self.optimizers, self.params, self.scaler = optimizers, {k: list(v) for k, v in params.items()}, scaler
        self.amp, self.device, self.grad_clip = amp, device, grad_clip
        self.grad_norms: Dict[str, float] = {}  # pre-clipping norms of the last step, logged
        self.skipped: List[str] = []            # updates of this step refused as non-finite (trainer clears it)

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
        self._clip_and_step(name, bool(torch.isfinite(loss.detach()).all()))

    def optimize_accumulated(self, name: str, losses: Sequence[Callable[[], torch.Tensor]],
                             runner: Optional[torch.nn.Module] = None) -> List[float]:
        """One optimiser step of ``name`` on the sum of several losses, each with its own forward
        (``losses``: callables run in order) and backward, as the release's separate real / fake D
        passes. Under DDP (``runner`` the wrapper) only the last backward all-reduces: the gradients
        of the earlier ones are accumulated locally and reduced with it. Returns the loss values."""
        optimizer = self.optimizers[name]
        optimizer.zero_grad(set_to_none=True)
        values = []
        for i, make_loss in enumerate(losses):
            last = i == len(losses) - 1
            quiet = runner.no_sync() if (not last and hasattr(runner, "no_sync")) else contextlib.nullcontext()
            with quiet:
                loss = make_loss()
                self.scaler.scale(loss).backward()
            values.append(float(loss.detach()))
        self._clip_and_step(name, all(math.isfinite(v) for v in values))
        return values

    def _clip_and_step(self, name: str, loss_finite: bool) -> None:
        optimizer = self.optimizers[name]
        norm = None
        if self.grad_clip.get(name, 0.0) > 0:
            self.scaler.unscale_(optimizer)
            norm = float(torch.nn.utils.clip_grad_norm_(self.params[name], self.grad_clip[name]))
            self.grad_norms[name] = norm
        if not self.scaler.is_enabled():   # fp16: the GradScaler skips its (normal) overflow steps itself
            # one NaN gradient would make Adam's moments, then every weight NaN: the update is not applied
            # (keep.engine.nonfinite counts the step against nonfinite_patience)
            norm = grad_norm(self.params[name]) if norm is None else norm
            if not (math.isfinite(norm) and loss_finite):
                self.skipped.append(f"gradient of {name}: norm {norm}")
                optimizer.zero_grad(set_to_none=True)
                return
        self.scaler.step(optimizer)
