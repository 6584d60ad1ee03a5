"""Temporal consistency loss of stage III (supplement Eq. 7-8).

    L_temp = Σ_{t≥2} M_{t-1→t} ⊙ | ŷ_t − W(ŷ_{t-1}, Φ_{t→t-1}) |₁

with the flow Φ estimated on the *GT* frames (so the loss does not reward a static output) and M the
forward-backward consistency mask (Sundaram et al. 2010) that drops occluded / unreliable pixels.
The sum is normalised by the number of valid pixels (the supplement does not say; a mean keeps the
weight λ_temp independent of the resolution).

:class:`FeatureTemporalLoss` is the release's variant (``losses.temporal_scales``): Charbonnier on the
decoder features at the listed scales, no mask.
"""
from __future__ import annotations

from typing import Callable, Dict, Tuple

import torch
import torch.nn.functional as F
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


def resize_flow(flow: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """A pixel flow (N, 2, H, W) resized to ``size`` = (h, w): values rescaled by w/W (x) and h/H (y),
    then bilinear resampling (align_corners=False), as the release's ``resize_flow(..., 'shape')``
    (``basicsr/archs/arch_util.py:151-186``)."""
    _, _, height, width = flow.shape
    h, w = size
    scaled = torch.stack([flow[:, 0] * (w / width), flow[:, 1] * (h / height)], dim=1)
    return F.interpolate(scaled, size=(h, w), mode="bilinear", align_corners=False)


# The release's CharbonnierLoss default (basicsr/losses/losses.py:26-27, :104): sqrt(d^2 + eps)
CHARBONNIER_EPS = 1e-12


def charbonnier(a: torch.Tensor, b: torch.Tensor, eps: float = CHARBONNIER_EPS) -> torch.Tensor:
    """Mean of sqrt((a - b)^2 + eps) over all elements."""
    return torch.sqrt((a - b) ** 2 + eps).mean()


@LOSSES.register()
class FeatureTemporalLoss(nn.Module):
    """The release's stage III temporal loss (``keep_gan_model.py:189-234``, ``temporal_warp_type: GT``):
    at each listed decoder scale, the features after CFT and CFA of frame t against those of frame
    t-1 warped onto t with the flow of the GT frames (computed at full size, resized and rescaled to
    the scale), Charbonnier (eps 1e-12, mean), no occlusion mask; summed over the scales.
    """

    def forward(self, feats: Dict[str, torch.Tensor], flows: torch.Tensor) -> torch.Tensor:
        """feats: {scale: (B, T, C, h, w)}; flows: (B*(T-1), 2, H, W) frame t -> t-1 of the GT clip
        (warps frame t-1 onto t). Returns a scalar."""
        if not feats:
            raise ValueError("the feature temporal loss needs decoder features (losses.temporal_scales)")
        total = flows.new_zeros(())
        for feat in feats.values():
            b, t, c, h, w = feat.shape
            if t < 2:
                raise ValueError("the temporal loss needs clips of at least 2 frames")
            flow = resize_flow(flows.float(), (h, w))
            prev = feat[:, :-1].reshape(-1, c, h, w).float()
            curr = feat[:, 1:].reshape(-1, c, h, w).float()
            total = total + charbonnier(curr, flow_warp(prev, flow))
        return total
