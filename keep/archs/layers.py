"""Building blocks shared by the KEEP networks.

Parameter names follow the official release (VQGAN blocks from CodeFormer, attention and feed-forward
layers named as diffusers 0.11 names them) so that the released state dict loads strictly; the code is
our own and computes attention with :func:`torch.nn.functional.scaled_dot_product_attention`.

Conventions: feature maps are (N, C, H, W); token sequences are (N, L, C) (batch first).
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm of the VQGAN blocks: 32 groups, eps 1e-6, affine.

    Tiny configurations use fewer than 32 channels; there the group count falls back to
    gcd(32, channels), which leaves every released width (multiples of 32) unchanged.
    """
    return nn.GroupNorm(math.gcd(32, channels), channels, eps=1e-6, affine=True)


def swish(x: torch.Tensor) -> torch.Tensor:
    """x * sigmoid(x), as the release writes it (equal to SiLU)."""
    return F.silu(x)


class ResBlock(nn.Module):
    """Pre-activation residual block: ``x + conv2(swish(GN(conv1(swish(GN(x))))))``.

    A 1x1 ``conv_out`` maps the skip path when ``in_channels != out_channels``.
    Input (N, in_channels, H, W) -> (N, out_channels, H, W).
    """

    def __init__(self, in_channels: int, out_channels: Optional[int] = None):
        super().__init__()
        out_channels = in_channels if out_channels is None else out_channels
        self.in_channels, self.out_channels = in_channels, out_channels
        self.norm1 = group_norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, 1, 1)
        self.norm2 = group_norm(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1)
        if in_channels != out_channels:
            self.conv_out = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(swish(self.norm1(x)))
        h = self.conv2(swish(self.norm2(h)))
        skip = self.conv_out(x) if self.in_channels != self.out_channels else x
        return skip + h


class AttnBlock(nn.Module):
    """Single-head spatial self-attention of the VQGAN (scale C^-1/2), with a residual.

    Input and output (N, C, H, W).
    """

    def __init__(self, channels: int):
        super().__init__()
        self.norm = group_norm(channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        y = self.norm(x)
        # (N, C, H, W) -> (N, 1 head, HW, C)
        q, k, v = (conv(y).reshape(n, 1, c, h * w).transpose(2, 3) for conv in (self.q, self.k, self.v))
        out = F.scaled_dot_product_attention(q, k, v)
        out = out.transpose(2, 3).reshape(n, c, h, w)
        return x + self.proj_out(out)


class Downsample(nn.Module):
    """Halve H and W: zero-pad right/bottom by one pixel, then a 3x3 stride-2 conv (no padding)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, 2, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Double H and W: nearest-neighbour x2, then a 3x3 conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(N, L, heads * d) -> (N, heads, L, d)."""
    n, length, inner = x.shape
    return x.reshape(n, length, heads, inner // heads).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(N, heads, L, d) -> (N, L, heads * d)."""
    n, heads, length, d = x.shape
    return x.transpose(1, 2).reshape(n, length, heads * d)


class CrossAttention(nn.Module):
    """Multi-head (cross-)attention with diffusers' parameter names.

    ``inner = heads * dim_head`` is independent of ``query_dim``; q/k/v have no bias, ``to_out.0``
    has one (``to_out.1`` is diffusers' dropout, kept for the index). Scale ``dim_head^-1/2``.

    Args in forward: hidden (N, Lq, query_dim); context (N, Lk, query_dim) or None for
    self-attention. Returns (N, Lq, query_dim).
    """

    def __init__(self, query_dim: int, heads: int = 8, dim_head: int = 64, context_dim: Optional[int] = None):
        super().__init__()
        inner = heads * dim_head
        context_dim = query_dim if context_dim is None else context_dim
        self.heads = heads
        self.to_q = nn.Linear(query_dim, inner, bias=False)
        self.to_k = nn.Linear(context_dim, inner, bias=False)
        self.to_v = nn.Linear(context_dim, inner, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(inner, query_dim), nn.Dropout(0.0)])

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Attention on already projected (N, L, inner) tensors, then the output projection."""
        out = F.scaled_dot_product_attention(split_heads(q, self.heads), split_heads(k, self.heads),
                                             split_heads(v, self.heads))
        return self.to_out[1](self.to_out[0](merge_heads(out)))

    def forward(self, hidden: torch.Tensor, context: Optional[torch.Tensor] = None) -> torch.Tensor:
        context = hidden if context is None else context
        return self.attend(self.to_q(hidden), self.to_k(context), self.to_v(context))


class GEGLU(nn.Module):
    """``value * GELU(gate)`` with ``[value, gate] = proj(x)`` split in that order (exact GELU)."""

    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out * 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value, gate = self.proj(x).chunk(2, dim=-1)
        return value * F.gelu(gate)


class FeedForward(nn.Module):
    """GEGLU feed-forward ``net = [GEGLU(dim, mult*dim), Dropout, Linear(mult*dim, dim)]`` (diffusers names)."""

    def __init__(self, dim: int, mult: int = 4):
        super().__init__()
        inner = dim * mult
        self.net = nn.ModuleList([GEGLU(dim, inner), nn.Dropout(0.0), nn.Linear(inner, dim)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.net:
            x = layer(x)
        return x
