"""Kalman filter network of KEEP (paper Sec. 3.2, Fig. 3, supp. Fig. A1 and Alg. 1).

State = latent code z (C, h, w) of a frame. Per frame t:

* observation  z_obs_t  = E_L(x_t)                      (LQ encoder on the input frame)
* prediction   z_pred_t = E_H(warp(y_{t-1}, flow_t))    (HQ encoder on the previous restored frame,
  warped onto frame t; :func:`keep.archs.warp.flow_warp`, paper Eq. 12)
* gain         g_t in (0, 1), one per latent token, from the uncertainty network over the observed
  codes and the gain network (Eq. 10-11)
* update       z_t = (1 - g_t) * z_obs_t + g_t * z_pred_t

Paper vs code on the update (we follow the code the checkpoint was trained with): the text of
Sec. 3.2 writes z+ = K z- + (1 - K) z~, which is the code; Eq. 8-9 write an innovation form
z+ = z- + K (z- - z~) with the sign reversed; supp. Alg. 1 puts K on the observation. Here **the gain
weights the prediction**.

The gain is not causal: each uncertainty block ends with a temporal attention over all frames of
the window, so g_t depends on later frames of the same window (the paper's Alg. 1 writes
K_t = phi(z_1, z_{t-1}, z_t)). The state path is causal.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Tuple

import torch
from torch import nn

from keep.archs.layers import CrossAttention, FeedForward, ResBlock
from keep.registry import ARCHS


@dataclass
class GainContext:
    """What the gain network of the next window needs from the past (one tensor per block).

    ``anchor[k]`` / ``prev[k]``: input of uncertainty block k for the anchor frame (first frame of
    the stream) and for the last frame seen, each (B, N, C); ``anchor[0]`` and ``prev[0]`` are the
    observed codes as tokens.
    """
    anchor: List[torch.Tensor]
    prev: List[torch.Tensor]


@ARCHS.register()
class UncertaintyBlock(nn.Module):
    """One block of the uncertainty network (Tune-A-Video style, diffusers names):

    1. sparse-causal spatial-temporal attention: queries from frame t, keys/values from the tokens of
       the anchor frame and of frame t-1 (frame 0 of a fresh window uses itself for both);
    2. GEGLU feed-forward;
    3. temporal self-attention over the window's T frames at each token position (not causal).

    Each step is pre-norm with a residual. ``attn_temp.to_out.0.weight`` starts at zero (release).
    """

    def __init__(self, dim: int = 256, heads: int = 8, dim_head: int = 48):
        super().__init__()
        self.attn1 = CrossAttention(dim, heads, dim_head)
        self.norm1 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim)
        self.norm3 = nn.LayerNorm(dim)
        self.attn_temp = CrossAttention(dim, heads, dim_head)
        self.norm_temp = nn.LayerNorm(dim)
        nn.init.zeros_(self.attn_temp.to_out[0].weight)

    def forward(self, hidden: torch.Tensor, anchor: Optional[torch.Tensor] = None,
                prev: Optional[torch.Tensor] = None) -> torch.Tensor:
        """hidden (B, T, N, C); anchor / prev (B, N, C) block inputs of the anchor frame and of the
        frame before hidden[:, 0] (None for a fresh window). Returns (B, T, N, C)."""
        b, t, n, c = hidden.shape
        attn = self.attn1
        normed = self.norm1(hidden)
        q, k, v = attn.to_q(normed), attn.to_k(normed), attn.to_v(normed)
        # keys/values of the anchor frame and of each frame's predecessor, projected once
        if anchor is None:
            k_anchor, v_anchor = k[:, :1], v[:, :1]
        else:
            normed_anchor = self.norm1(anchor)[:, None]
            k_anchor, v_anchor = attn.to_k(normed_anchor), attn.to_v(normed_anchor)
        if prev is None:
            k_first, v_first = k[:, :1], v[:, :1]
        else:
            normed_prev = self.norm1(prev)[:, None]
            k_first, v_first = attn.to_k(normed_prev), attn.to_v(normed_prev)
        k_prev = torch.cat([k_first, k[:, :-1]], dim=1)
        v_prev = torch.cat([v_first, v[:, :-1]], dim=1)
        keys = torch.cat([k_anchor.expand_as(k_prev), k_prev], dim=2).flatten(0, 1)  # (B*T, 2N, inner)
        values = torch.cat([v_anchor.expand_as(v_prev), v_prev], dim=2).flatten(0, 1)
        hidden = hidden + attn.attend(q.flatten(0, 1), keys, values).view(b, t, n, c)
        hidden = hidden + self.ff(self.norm3(hidden))
        # temporal attention: one sequence of T frame tokens per (batch item, token position)
        seq = hidden.transpose(1, 2).reshape(b * n, t, c)
        seq = seq + self.attn_temp(self.norm_temp(seq))
        return seq.view(b, n, t, c).transpose(1, 2)


@ARCHS.register()
class KalmanFilterNet(nn.Module):
    """Uncertainty network (``uncertainty_estimator``) + gain network (``kalman_gain_calculator``:
    3 ResBlocks, 1x1 conv to one channel, sigmoid)."""

    def __init__(self, dim: int = 256, num_layers: int = 3, heads: int = 8, dim_head: int = 48):
        super().__init__()
        self.uncertainty_estimator = nn.ModuleList([UncertaintyBlock(dim, heads, dim_head)
                                                    for _ in range(num_layers)])
        self.kalman_gain_calculator = nn.Sequential(
            ResBlock(dim, dim), ResBlock(dim, dim), ResBlock(dim, dim), nn.Conv2d(dim, 1, 1), nn.Sigmoid())

    def gains(self, z_obs: torch.Tensor, context: Optional[GainContext] = None
              ) -> Tuple[torch.Tensor, GainContext]:
        """Gains for a whole window at once.

        z_obs (B, T, C, h, w) observed codes; ``context`` from the previous window (None = fresh).
        Returns gains (B, T, 1, h, w) in (0, 1) (the weight of the *predicted* state) and the context
        for the next window. With context None, the gain of frame 0 is computed but has no use.
        """
        b, t, c, h, w = z_obs.shape
        hidden = z_obs.flatten(3).transpose(2, 3)  # (B, T, h*w, C), token order row-major
        anchors, prevs = [], []
        for k, block in enumerate(self.uncertainty_estimator):
            # copies, so a carried context does not keep the whole window's activations alive
            anchors.append(hidden[:, 0].clone() if context is None else context.anchor[k])
            prevs.append(hidden[:, -1].clone())
            hidden = block(hidden, None if context is None else context.anchor[k],
                           None if context is None else context.prev[k])
        maps = hidden.transpose(2, 3).reshape(b * t, c, h, w)
        gains = self.kalman_gain_calculator(maps).view(b, t, 1, h, w)
        return gains, GainContext(anchors, prevs)

    @staticmethod
    def update(z_obs: torch.Tensor, z_pred: torch.Tensor, gain: torch.Tensor) -> torch.Tensor:
        """Kalman update as the release computes it: (1 - g) * z_obs + g * z_pred (see module doc)."""
        return (1 - gain) * z_obs + gain * z_pred
