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

The released gain is not causal: each uncertainty block ends with a temporal attention over all
frames of the window, so g_t depends on later frames of the same window (the paper's Alg. 1 writes
K_t = phi(z_1, z_{t-1}, z_t)). The state path is causal.

Causal mode (``causal=True``, our addition for live restoration): the temporal attention of frame t
sees frames t-W+1 .. t only (a banded causal mask; W = ``window``, the training clip length 8 by
default). Across windows / single frames, the keys and values of the last W-1 frames ride along in
:attr:`GainContext.temporal`, so a stream restored frame by frame gets the same gains as one long
window with the mask, with memory and time per frame independent of the stream's length. No new
parameters: the released weights load as they are (a short fine-tune adapts them to the mask,
``configs/causal_stage2.yaml``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from keep.archs.layers import CrossAttention, FeedForward, ResBlock, merge_heads, split_heads
from keep.registry import ARCHS


@dataclass
class GainContext:
    """What the gain network of the next window needs from the past (one tensor per block).

    ``anchor[k]`` / ``prev[k]``: input of uncertainty block k for the anchor frame (first frame of
    the stream) and for the last frame seen, each (B, N, C); ``anchor[0]`` and ``prev[0]`` are the
    observed codes as tokens.

    ``temporal[k]`` (causal mode only, else None): keys and values of block k's temporal attention
    for the last L <= W-1 frames, each (B*N, L, inner); the rolling cache of the causal mask.
    """
    anchor: List[torch.Tensor]
    prev: List[torch.Tensor]
    temporal: Optional[List[Tuple[torch.Tensor, torch.Tensor]]] = None


def causal_band_mask(queries: int, cached: int, window: int, device: torch.device) -> torch.Tensor:
    """(queries, cached + queries) bool, True where query i (stream position cached + i) may attend
    key j: j <= cached + i (no future frame) and j > cached + i - window (the last ``window`` frames)."""
    q = torch.arange(queries, device=device)[:, None] + cached
    k = torch.arange(cached + queries, device=device)[None, :]
    return (k <= q) & (k > q - window)


@ARCHS.register()
class UncertaintyBlock(nn.Module):
    """One block of the uncertainty network (Tune-A-Video style, diffusers names):

    1. sparse-causal spatial-temporal attention: queries from frame t, keys/values from the tokens of
       the anchor frame and of frame t-1 (frame 0 of a fresh window uses itself for both);
    2. GEGLU feed-forward;
    3. temporal self-attention over the window's T frames at each token position (not causal;
       :meth:`forward_causal` is the masked variant with a carried key/value cache).

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
        hidden = self._spatial(hidden, anchor, prev)
        # temporal attention: one sequence of T frame tokens per (batch item, token position)
        seq = hidden.transpose(1, 2).reshape(b * n, t, c)
        seq = seq + self.attn_temp(self.norm_temp(seq))
        return seq.view(b, n, t, c).transpose(1, 2)

    def forward_causal(self, hidden: torch.Tensor, anchor: Optional[torch.Tensor], prev: Optional[torch.Tensor],
                       window: int, cache: Optional[Tuple[torch.Tensor, torch.Tensor]] = None
                       ) -> Tuple[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
        """As :meth:`forward` with the temporal attention restricted to the current and the previous
        ``window - 1`` frames. ``cache``: (keys, values) (B*N, L, inner) of the L frames before
        hidden[:, 0] (None = none). Returns the output and the cache for the next call (last
        ``window - 1`` frames, copied so the window's activations are not kept alive)."""
        b, t, n, c = hidden.shape
        hidden = self._spatial(hidden, anchor, prev)
        seq = hidden.transpose(1, 2).reshape(b * n, t, c)
        attn = self.attn_temp
        normed = self.norm_temp(seq)
        q, k, v = attn.to_q(normed), attn.to_k(normed), attn.to_v(normed)
        if cache is not None:
            k, v = torch.cat([cache[0], k], dim=1), torch.cat([cache[1], v], dim=1)
        cached = k.shape[1] - t
        mask = causal_band_mask(t, cached, window, seq.device)
        out = F.scaled_dot_product_attention(split_heads(q, attn.heads), split_heads(k, attn.heads),
                                             split_heads(v, attn.heads), attn_mask=mask)
        seq = seq + attn.to_out[1](attn.to_out[0](merge_heads(out)))
        # the last window - 1 frames (the ones the next query may still see); a constant negative start,
        # not one computed from k's length, so an exported graph keeps the length dynamic
        keep = slice(-(window - 1), None) if window > 1 else slice(0, 0)
        new_cache = (k[:, keep].clone(), v[:, keep].clone())
        return seq.view(b, n, t, c).transpose(1, 2), new_cache

    def _spatial(self, hidden: torch.Tensor, anchor: Optional[torch.Tensor],
                 prev: Optional[torch.Tensor]) -> torch.Tensor:
        """Steps 1-2 (sparse-causal attention and feed-forward), causal by construction."""
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
        return hidden + self.ff(self.norm3(hidden))


def _official_init(module: nn.Module) -> None:
    """The release's ``KalmanFilter._init_weights`` for one module."""
    if isinstance(module, nn.Conv2d):
        nn.init.kaiming_normal_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


@ARCHS.register()
class KalmanFilterNet(nn.Module):
    """Uncertainty network (``uncertainty_estimator``) + gain network (``kalman_gain_calculator``:
    3 ResBlocks, 1x1 conv to one channel, sigmoid).

    ``causal`` is the default mode of :meth:`gains` (False: the release's window-wide temporal
    attention); ``window`` the causal mode's attention span in frames (current one included).
    ``init``: "default" keeps PyTorch's initialisation (and the zero ``attn_temp.to_out``); "official"
    is the release's ``_init_weights`` applied to the whole filter (keep_arch.py:506-519): linear
    weights N(0, 0.02) with zero biases (which also overwrites the zero ``attn_temp.to_out``),
    convolutions kaiming-normal with zero biases, LayerNorms 1 / 0.
    """

    def __init__(self, dim: int = 256, num_layers: int = 3, heads: int = 8, dim_head: int = 48,
                 causal: bool = False, window: int = 8, init: str = "default"):
        super().__init__()
        if window < 1:
            raise ValueError(f"the causal attention window must be at least 1 frame, got {window}")
        if init not in ("default", "official"):
            raise ValueError(f"kalman init must be 'default' or 'official', got {init!r}")
        self.causal, self.window = bool(causal), int(window)
        self.uncertainty_estimator = nn.ModuleList([UncertaintyBlock(dim, heads, dim_head)
                                                    for _ in range(num_layers)])
        self.kalman_gain_calculator = nn.Sequential(
            ResBlock(dim, dim), ResBlock(dim, dim), ResBlock(dim, dim), nn.Conv2d(dim, 1, 1), nn.Sigmoid())
        if init == "official":
            self.apply(_official_init)

    def gains(self, z_obs: torch.Tensor, context: Optional[GainContext] = None, causal: Optional[bool] = None
              ) -> Tuple[torch.Tensor, GainContext]:
        """Gains for a whole window at once.

        z_obs (B, T, C, h, w) observed codes; ``context`` from the previous window (None = fresh);
        ``causal`` None = this net's default mode. Returns gains (B, T, 1, h, w) in (0, 1) (the weight
        of the *predicted* state) and the context for the next window. With context None, the gain
        of frame 0 is computed but has no use.
        """
        causal = self.causal if causal is None else causal
        b, t, c, h, w = z_obs.shape
        hidden = z_obs.flatten(3).transpose(2, 3)  # (B, T, h*w, C), token order row-major
        anchors, prevs, caches = [], [], []
        for k, block in enumerate(self.uncertainty_estimator):
            # copies, so a carried context does not keep the whole window's activations alive
            anchors.append(hidden[:, 0].clone() if context is None else context.anchor[k])
            prevs.append(hidden[:, -1].clone())
            anchor = None if context is None else context.anchor[k]
            prev = None if context is None else context.prev[k]
            if causal:
                # a state from the non-causal mode carries no cache: the causal span starts here
                cache = None if context is None or context.temporal is None else context.temporal[k]
                hidden, cache = block.forward_causal(hidden, anchor, prev, self.window, cache)
                caches.append(cache)
            else:
                hidden = block(hidden, anchor, prev)
        maps = hidden.transpose(2, 3).reshape(b * t, c, h, w)
        gains = self.kalman_gain_calculator(maps).view(b, t, 1, h, w)
        return gains, GainContext(anchors, prevs, caches if causal else None)

    @staticmethod
    def update(z_obs: torch.Tensor, z_pred: torch.Tensor, gain: torch.Tensor) -> torch.Tensor:
        """Kalman update as the release computes it: (1 - g) * z_obs + g * z_pred (see module doc)."""
        return (1 - gain) * z_obs + gain * z_pred
