"""LPIPS-VGG as a training loss (Zhang et al. 2018), through the ``lpips`` package.

The paper's L_per (supplement Eq. 3, 6) is "the perceptual loss" without more detail; CodeFormer,
which KEEP's training derives from, trains with LPIPS on a VGG-16 backbone. This is that loss:
the package's calibrated v0.1 linear layers (shipped with the package) over torchvision's ImageNet
VGG-16 features (``vgg16-397923af.pth`` in the torch hub cache; checked before training starts, see
:func:`keep.engine.init.preflight`). ``pretrained: false`` builds a seeded random backbone (smoke
runs only; logged). Inputs (N, 3, H, W) RGB in [-1, 1], the convention the package expects.

``input_norm: "imagenet"`` is the v1.0.0 release's ``LPIPSLoss`` (``use_input_norm: true``,
``range_norm: true``; ``basicsr/losses/losses.py:256-282`` of the release, inherited from CodeFormer):
the images are mapped [-1, 1] -> [0, 1] -> ImageNet mean / std *before* they reach LPIPS, whose own
ScalingLayer then shifts and scales them again, so the VGG sees inputs about 2.2x wider than it was
trained on. A quirk, but the one the released weights were trained with (``perceptual_type:
lpips_vgg_release``); ``"none"`` feeds [-1, 1] as the package intends (``lpips_vgg``).
"""
from __future__ import annotations

import contextlib
import io
import warnings

import torch
from torch import nn

from keep.registry import LOSSES

INPUT_NORMS = ("none", "imagenet")
IMAGENET_MEAN = (0.485, 0.456, 0.406)   # torchvision's, for images in [0, 1]
IMAGENET_STD = (0.229, 0.224, 0.225)


@LOSSES.register()
class LPIPSLoss(nn.Module):
    """Mean LPIPS distance of a batch (gradients flow to ``pred`` only); the network stays frozen."""

    def __init__(self, pretrained: bool = True, seed: int = 0, input_norm: str = "none"):
        super().__init__()
        import lpips
        if input_norm not in INPUT_NORMS:
            raise ValueError(f"input_norm must be one of {INPUT_NORMS}, got {input_norm!r}")
        self.pretrained, self.input_norm = pretrained, input_norm
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        with torch.random.fork_rng(devices=[]), contextlib.redirect_stdout(io.StringIO()), \
                warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # torchvision's `pretrained` deprecation notes
            torch.manual_seed(seed)  # a random backbone is the same on every rank and every resume
            self.model = lpips.LPIPS(net="vgg", pretrained=True, pnet_rand=not pretrained, verbose=False)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "LPIPSLoss":
        return super().train(False)  # dropout / batch statistics never switch on

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """What LPIPS receives for an image in [-1, 1] (before its own ScalingLayer)."""
        x = x.float()
        if self.input_norm == "imagenet":
            x = ((x + 1) / 2 - self.mean) / self.std
        return x

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.model(self.prepare(pred), self.prepare(target.detach()), normalize=False).mean()
