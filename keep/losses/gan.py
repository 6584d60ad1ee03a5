"""Adversarial losses for the patch discriminators (supplement Eq. 3 and Eq. 5)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from keep.registry import LOSSES

GAN_TYPES = ("hinge", "vanilla", "lsgan")


@LOSSES.register()
class GANLoss(nn.Module):
    """Generator / discriminator objectives on raw patch scores (any shape).

    * ``vanilla``: the log-likelihood form of Eq. 5 (BCE with logits).
    * ``hinge``: what CodeFormer trains its VQGAN and CFT with; the default here.
    * ``lsgan``: least squares.
    """

    def __init__(self, gan_type: str = "hinge"):
        super().__init__()
        if gan_type not in GAN_TYPES:
            raise ValueError(f"gan_type must be one of {GAN_TYPES}, got {gan_type!r}")
        self.gan_type = gan_type

    def generator_loss(self, fake_scores: torch.Tensor) -> torch.Tensor:
        """Loss for the generator: make D score its outputs as real."""
        s = fake_scores.float()
        if self.gan_type == "hinge":
            return -s.mean()
        if self.gan_type == "vanilla":
            return F.binary_cross_entropy_with_logits(s, torch.ones_like(s))
        return F.mse_loss(s, torch.ones_like(s))

    def discriminator_loss(self, real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
        """Loss for the discriminator: real -> high, fake -> low (fake scores must be detached);
        the mean of the two halves."""
        return 0.5 * (self.discriminator_real_loss(real_scores) + self.discriminator_fake_loss(fake_scores))

    def discriminator_real_loss(self, real_scores: torch.Tensor) -> torch.Tensor:
        """The real half of the discriminator loss (real -> high)."""
        r = real_scores.float()
        if self.gan_type == "hinge":
            return F.relu(1 - r).mean()
        if self.gan_type == "vanilla":
            return F.binary_cross_entropy_with_logits(r, torch.ones_like(r))
        return F.mse_loss(r, torch.ones_like(r))

    def discriminator_fake_loss(self, fake_scores: torch.Tensor) -> torch.Tensor:
        """The fake half of the discriminator loss (fake -> low; scores of detached fakes)."""
        f = fake_scores.float()
        if self.gan_type == "hinge":
            return F.relu(1 + f).mean()
        if self.gan_type == "vanilla":
            return F.binary_cross_entropy_with_logits(f, torch.zeros_like(f))
        return F.mse_loss(f, torch.zeros_like(f))
