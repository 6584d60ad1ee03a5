"""Discriminators: the 2-D patch discriminator of stage I and the temporal 3-D PatchGAN of stage III.

Both return raw patch scores (no sigmoid); :class:`keep.losses.GANLoss` turns them into losses.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torch.nn.utils import spectral_norm

from keep.registry import ARCHS


@ARCHS.register()
class PatchDiscriminator(nn.Module):
    """PatchGAN of the VQGAN stage (supplement Eq. 3; CodeFormer's ``VQGANDiscriminator`` layout).

    conv4×4 s2 + LeakyReLU, then ``n_layers - 1`` × [conv4×4 s2 + BN + LeakyReLU] doubling the
    channels (at most 8·ndf), one conv4×4 s1 + BN + LeakyReLU, and a conv4×4 s1 to one score map.
    Input (N, 3, H, W) in [-1, 1]; output (N, 1, H/2^n_layers - 2, ...) scores. H must be at least
    2^(n_layers) · 4.
    """

    def __init__(self, in_channels: int = 3, ndf: int = 64, n_layers: int = 4):
        super().__init__()
        layers = [nn.Conv2d(in_channels, ndf, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        ch = ndf
        for n in range(1, n_layers):
            out = ndf * min(2 ** n, 8)
            layers += [nn.Conv2d(ch, out, 4, 2, 1, bias=False), nn.BatchNorm2d(out), nn.LeakyReLU(0.2, True)]
            ch = out
        out = ndf * min(2 ** n_layers, 8)
        layers += [nn.Conv2d(ch, out, 4, 1, 1, bias=False), nn.BatchNorm2d(out), nn.LeakyReLU(0.2, True),
                   nn.Conv2d(out, 1, 4, 1, 1)]
        self.main = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x)


@ARCHS.register()
class TemporalPatchDiscriminator(nn.Module):
    """Temporal PatchGAN of stage III (supplement Eq. 5; the release's ``Discriminator3D``).

    ``num_layers`` Conv3d with kernel (3, 5, 5) and stride (1, 2, 2): time is never strided, so every
    score sees a 3-frame neighbourhood per layer (a receptive field over many frames) and flicker is
    visible to it. Channels nf, 2nf, 4nf, 4nf, ...; spectral norm, no bias and LeakyReLU(0.2) on all
    but the last conv. The release pads the first conv by 1 on every axis (``first_padding: [1, 1, 1]``,
    vqgan_arch.py:523-529) and the others by (1, 2, 2); the default pads all by (1, 2, 2), so every layer
    halves H and W exactly.

    Input (B, T, 3, H, W) in [-1, 1]; output (B, T, C_out, H / 2^L, W / 2^L) scores.
    """

    def __init__(self, in_channels: int = 3, nf: int = 32, num_layers: int = 6, use_spectral_norm: bool = True,
                 first_padding: Sequence[int] = (1, 2, 2)):
        super().__init__()
        first_padding = tuple(int(p) for p in first_padding)
        if len(first_padding) != 3 or min(first_padding) < 0:
            raise ValueError(f"first_padding: three paddings (time, height, width) >= 0, got {list(first_padding)}")
        sn = spectral_norm if use_spectral_norm else (lambda m: m)
        layers = []
        ch = in_channels
        for i in range(num_layers - 1):
            out = nf * min(2 ** i, 4)
            layers += [sn(nn.Conv3d(ch, out, (3, 5, 5), (1, 2, 2), first_padding if i == 0 else (1, 2, 2), bias=False)),
                       nn.LeakyReLU(0.2, True)]
            ch = out
        layers.append(nn.Conv3d(ch, ch, (3, 5, 5), (1, 2, 2), (1, 2, 2)))
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x.transpose(1, 2)).transpose(1, 2)
