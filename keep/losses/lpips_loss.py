"""LPIPS-VGG as a training loss (Zhang et al. 2018), through the ``lpips`` package.

The paper's L_per (supplement Eq. 3, 6) is "the perceptual loss" without more detail; CodeFormer,
which KEEP's training derives from, trains with LPIPS on a VGG-16 backbone. This is that loss:
the package's calibrated v0.1 linear layers (shipped with the package) over torchvision's ImageNet
VGG-16 features (``vgg16-397923af.pth`` in the torch hub cache; checked before training starts, see
:func:`keep.engine.init.preflight`). ``pretrained: false`` builds a seeded random backbone (smoke
runs only; logged). Inputs (N, 3, H, W) RGB in [-1, 1], the convention the package expects.
"""
from __future__ import annotations

import contextlib
import io
import warnings

import torch
from torch import nn

from keep.registry import LOSSES


@LOSSES.register()
class LPIPSLoss(nn.Module):
    """Mean LPIPS distance of a batch (gradients flow to ``pred`` only); the network stays frozen."""

    def __init__(self, pretrained: bool = True, seed: int = 0):
        super().__init__()
        import lpips
        self.pretrained = pretrained
        with torch.random.fork_rng(devices=[]), contextlib.redirect_stdout(io.StringIO()), \
                warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # torchvision's `pretrained` deprecation notes
            torch.manual_seed(seed)  # a random backbone is the same on every rank and every resume
            self.model = lpips.LPIPS(net="vgg", pretrained=True, pnet_rand=not pretrained, verbose=False)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "LPIPSLoss":
        return super().train(False)  # dropout / batch statistics never switch on

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.model(pred.float(), target.detach().float(), normalize=False).mean()
