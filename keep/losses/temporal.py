"""Temporal consistency loss of stage III (supplement Eq. 7-8).

    L_temp = Σ_{t≥2} M_{t-1→t} ⊙ | ŷ_t − W(ŷ_{t-1}, Φ_{t→t-1}) |₁

with the flow Φ estimated on the *GT* frames (so the loss does not reward a static output) and M the
forward-backward consistency mask (Sundaram et al. 2010) that drops occluded / unreliable pixels.
The sum is normalised by the number of valid pixels (the supplement does not say; a mean keeps the
weight λ_temp independent of the resolution).
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from keep.archs.warp import flow_warp
from keep.registry import LOSSES


def consistency_mask(fwd: torch.Tensor, bwd: torch.Tensor, alpha: float = 0.01, beta: float = 0.5) -> torch.Tensor:
    """Valid-pixel mask (N, 1, H, W) in {0, 1} of the forward flow ``fwd`` given the backward ``bwd``.

    A pixel is occluded where ``|fwd + W(bwd, fwd)| > alpha·(|fwd| + |bwd|) + beta`` (GMFlow's check,
    norms rather than UnFlow's squared norms): following the flow there and back must come home.
    """
    bwd_at_target = flow_warp(bwd, fwd)
    diff = torch.linalg.vector_norm(fwd + bwd_at_target, dim=1, keepdim=True)
    bound = alpha * (torch.linalg.vector_norm(fwd, dim=1, keepdim=True)
                     + torch.linalg.vector_norm(bwd_at_target, dim=1, keepdim=True)) + beta
    return (diff <= bound).to(fwd.dtype)


@LOSSES.register()
class TemporalLoss(nn.Module):
    """Masked L1 between each output frame and the previous output frame warped onto it.

    ``flow_fn(a, b)`` takes two (N, 3, H, W) batches in [-1, 1] and returns the flow (N, 2, H, W) that
    backward-warps ``b`` onto ``a`` (the KEEP flow-net convention). It runs without gradients.
    """

    def __init__(self, alpha: float = 0.01, beta: float = 0.5):
        super().__init__()
        self.alpha, self.beta = alpha, beta

    def forward(self, output: torch.Tensor, gt: torch.Tensor,
                flow_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """output, gt: (B, T, 3, H, W) in [-1, 1], T >= 2. Returns a scalar."""
        b, t, c, h, w = output.shape
        if t < 2:
            raise ValueError("the temporal loss needs clips of at least 2 frames")
        cur_gt = gt[:, 1:].reshape(-1, c, h, w)
        prev_gt = gt[:, :-1].reshape(-1, c, h, w)
        with torch.no_grad():
            flows = flow_fn(torch.cat([cur_gt, prev_gt]), torch.cat([prev_gt, cur_gt])).float()
            fwd, bwd = flows.chunk(2)  # fwd: t -> t-1 (warps frame t-1 onto t); bwd: t-1 -> t
            mask = consistency_mask(fwd, bwd, self.alpha, self.beta)
        warped_prev = flow_warp(output[:, :-1].reshape(-1, c, h, w).float(), fwd)
        diff = (output[:, 1:].reshape(-1, c, h, w).float() - warped_prev).abs() * mask
        return diff.sum() / (mask.sum() * c).clamp_min(1.0)
