"""Decoder-side fusion blocks of KEEP.

* :class:`CFTBlock` (release: ``Fuse_sft_block``, keys ``fuse_convs_dict.<size>`` / v1.0.0 ``cft.<size>``):
  controllable feature transformation (CodeFormer), mixing LQ encoder features into the decoder
  (supp. Eq. 1).
* :class:`CFABlock` (release: ``CrossFrameFusionLayer``, keys ``cross_fuse.<size>`` / v1.0.0
  ``cfa.<size>``): cross-frame attention from the current decoder features to the previous
  frame's (paper Eq. 13).

Initialisation (``zero_init``): the release zero-fills *all* conv / linear weights and biases of
these blocks ("official"). From there most of their gradients are zero forever (q.k = 0 and v = 0
form a saddle; GEGLU value and gate are both 0): only a few biases and the LayerNorm affines ever
learn. "last" zeroes only the last projection(s): still an identity at init, every weight can move.
Stage III training re-initialises the blocks it does not load with its ``fusion_init`` (ours
"gated", or the release's "official": keep.models.stage3). Loading a checkpoint overwrites either.
"""
from __future__ import annotations

import torch
from torch import nn

from keep.archs.layers import CrossAttention, FeedForward, ResBlock
from keep.registry import ARCHS

ZERO_INIT_CHOICES = ("official", "last")


def _check_zero_init(zero_init: str) -> None:
    if zero_init not in ZERO_INIT_CHOICES:
        raise ValueError(f"zero_init must be one of {ZERO_INIT_CHOICES}, got {zero_init!r}")


def _zero(*modules: nn.Module) -> None:
    for module in modules:
        for param in module.parameters():
            nn.init.zeros_(param)


@ARCHS.register()
class CFTBlock(nn.Module):
    """out = dec + w * (dec * scale(e) + shift(e)), e = ResBlock([enc, dec]) (encoder first).

    enc, dec (N, C, H, W) -> (N, C, H, W). The release always uses w = 1.
    """

    def __init__(self, channels: int, zero_init: str = "last"):
        super().__init__()
        _check_zero_init(zero_init)
        self.encode_enc = ResBlock(2 * channels, channels)
        self.scale = nn.Sequential(nn.Conv2d(channels, channels, 3, 1, 1), nn.LeakyReLU(0.2, True),
                                   nn.Conv2d(channels, channels, 3, 1, 1))
        self.shift = nn.Sequential(nn.Conv2d(channels, channels, 3, 1, 1), nn.LeakyReLU(0.2, True),
                                   nn.Conv2d(channels, channels, 3, 1, 1))
        if zero_init == "official":
            _zero(*(m for m in self.modules() if isinstance(m, nn.Conv2d)))
        else:
            _zero(self.scale[2], self.shift[2])

    def forward(self, enc: torch.Tensor, dec: torch.Tensor, w: float = 1.0) -> torch.Tensor:
        e = self.encode_enc(torch.cat([enc, dec], dim=1))
        return dec + w * (dec * self.scale(e) + self.shift(e))


@ARCHS.register()
class CFABlock(nn.Module):
    """Cross-frame attention (post-norm on the branches):

    x = curr + LN1(Attn(Q = curr, K = V = prev)); x = x + LN2(FF(x)).

    curr, prev (N, C, H, W) -> (N, C, H, W); ``heads`` x ``dim_head`` (release 4 x 256 at both
    scales, whatever C), GEGLU feed-forward of width 4C, no positional encoding.
    """

    def __init__(self, channels: int, heads: int = 4, dim_head: int = 256, zero_init: str = "last"):
        super().__init__()
        _check_zero_init(zero_init)
        self.norm1 = nn.LayerNorm(channels)
        self.norm2 = nn.LayerNorm(channels)
        self.ff = FeedForward(channels)
        self.attn = CrossAttention(channels, heads, dim_head)
        if zero_init == "official":
            _zero(*(m for m in self.modules() if isinstance(m, nn.Linear)))
        else:
            _zero(self.attn.to_out[0], self.ff.net[2])

    def forward(self, curr: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
        n, c, h, w = curr.shape
        x = curr.flatten(2).transpose(1, 2)  # (N, HW, C), row-major tokens
        memory = prev.flatten(2).transpose(1, 2)
        x = x + self.norm1(self.attn(x, memory))
        x = x + self.norm2(self.ff(x))
        return x.transpose(1, 2).reshape(n, c, h, w)

