"""A training run never goes on (nor saves, nor exports) with NaN or inf.

A non-finite loss or gradient poisons every later step: Adam turns one NaN gradient into NaN weights,
the EMA copies them, and the export is all NaN. So:

* :class:`~keep.engine.step.StepContext` skips the optimiser update of a step whose loss or gradient
  norm is not finite (with fp16 the GradScaler already does this for its overflow steps, which are
  normal there and not counted);
* :class:`NonFiniteGuard` counts consecutive non-finite steps; more than ``nonfinite_patience`` (config,
  default 0: the first one) stops the run with :class:`NonFiniteTraining`, naming the step and the terms;
* :func:`nonfinite_tensors` is checked before every checkpoint and export: weights that overflowed
  (a finite loss, a huge learning rate) are never written, so the newest checkpoint on disk stays the
  last finite one and ``--resume`` can start from it.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Dict, Iterable, List, Optional

import torch
from torch import nn

from keep.engine.errors import TrainSetupError


class NonFiniteTraining(TrainSetupError):
    """The run stopped because a loss, a gradient or the weights went NaN / inf."""


def nonfinite_terms(logs: Dict[str, float]) -> List[str]:
    """``name=value`` of every logged number (loss terms, gradient norms) that is NaN or inf."""
    return [f"{k}={v}" for k, v in logs.items() if isinstance(v, float) and not math.isfinite(v)]


def nonfinite_tensors(modules: Dict[str, nn.Module]) -> List[str]:
    """``module.tensor`` names of floating parameters / buffers holding NaN or inf."""
    bad = []
    for name, module in modules.items():
        for key, value in module.state_dict().items():
            if value.is_floating_point() and not bool(torch.isfinite(value).all()):
                bad.append(f"{name}.{key}")
    return bad


def grad_norm(params: Iterable[nn.Parameter]) -> float:
    """The global L2 norm of the parameters' gradients (inf / NaN if any gradient is)."""
    norms = [torch.linalg.vector_norm(p.grad.detach(), 2.0) for p in params if p.grad is not None]
    if not norms:
        return 0.0
    # as clip_grad_norm_ computes it (torch.nn.utils.get_total_norm is torch >= 2.6; requirements: >= 2.1)
    return float(torch.linalg.vector_norm(torch.stack([n.float() for n in norms]), 2.0))


def _last_checkpoint(folder: Path) -> str:
    from keep.engine.checkpoint import list_checkpoints
    found = list_checkpoints(folder)
    return (f"the newest checkpoint, {found[-1]}, holds the last finite weights (continue from it with "
            f"--resume, after changing the config)" if found else "no checkpoint was written before it")


class NonFiniteGuard:
    """Counts consecutive non-finite steps; :meth:`check` raises once there are more than ``patience``."""

    def __init__(self, patience: int, ckpt_dir: Path):
        self.patience, self.ckpt_dir = patience, Path(ckpt_dir)
        self.streak = 0

    def check(self, step: int, logs: Dict[str, float], skipped: List[str], modules: Dict[str, nn.Module],
              any_rank_bad: Optional[bool] = None) -> bool:
        """``step``: 1-based; ``skipped``: what :class:`StepContext` refused to apply; ``any_rank_bad``:
        the decision shared by every process (distributed runs). Returns True when this step was
        non-finite (its update skipped) and the run may go on; raises :class:`NonFiniteTraining` past
        the patience."""
        terms = nonfinite_terms(logs) + list(skipped)
        bad = bool(terms) if any_rank_bad is None else any_rank_bad
        if not bad:
            self.streak = 0
            return False
        self.streak += 1
        if self.streak <= self.patience:
            return True
        what = ", ".join(terms) or "on another process"
        cause = ""
        weights_bad = nonfinite_tensors(modules)
        if weights_bad:
            cause = (f"; the weights themselves are non-finite ({weights_bad[0]}, ...): an earlier update "
                     f"overflowed (learning rate too high?)")
        raise NonFiniteTraining(
            f"step {step}: non-finite training ({what}){cause}; stopped after {self.streak} such step(s) "
            f"(nonfinite_patience: {self.patience}). Nothing was saved or exported from this state: "
            f"{_last_checkpoint(self.ckpt_dir)}. Lower optim.lr, set optim.grad_clip, or check the data")

    def refuse_to_write(self, step: int, modules: Dict[str, nn.Module], what: str) -> None:
        """Raise instead of writing ``what`` (a checkpoint, an export) from non-finite weights."""
        bad = nonfinite_tensors(modules)
        if bad:
            raise NonFiniteTraining(
                f"step {step}: the weights hold NaN or inf ({len(bad)} tensors, e.g. {bad[0]}) although every "
                f"loss term was finite: the update overflowed (learning rate too high?). The {what} was not "
                f"written; {_last_checkpoint(self.ckpt_dir)}. Lower optim.lr or set optim.grad_clip")
