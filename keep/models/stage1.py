"""Stage I: the VQGAN codebook autoencoder on HQ frames (supplement Eq. 3).

    L_I = ‖y − ŷ‖₁ + L_per(y, ŷ) + λ_adv·L_adv(ŷ) + ‖sg(E_H(y)) − ẑ_q‖² + ‖E_H(y) − sg(ẑ_q)‖²

The last two terms come from :class:`keep.archs.vqgan.VectorQuantizer` (weights 1 and β as in the
release). Frames of a clip are treated as independent images (the codebook is image-based).
λ_adv is adaptive by default (``losses.adversarial_weight: adaptive``, the VQGAN/CodeFormer rule,
:func:`keep.models.base.adaptive_weight`, times ``losses.adversarial``), fixed on request; the
adversarial terms start at ``losses.disc_start``.
"""
from __future__ import annotations

from typing import Dict

import torch
import torch.nn.functional as F
from torch import nn

from keep.models.base import StageModel
from keep.registry import MODELS


@MODELS.register("stage1")
class VQGANStage(StageModel):
    stage = 1

    def training_step(self, batch: Dict[str, torch.Tensor], step: int, ctx) -> Dict[str, float]:
        w = self.cfg.losses
        frames = batch["gt"].flatten(0, 1)  # (B*T, 3, H, W)
        adversarial = self.adversarial_on(step)
        with ctx.autocast():
            recon, codebook_loss, _ = self.runners["net"](frames)
            l1 = F.l1_loss(recon.float(), frames)
            loss = w.l1 * l1 + w.codebook * codebook_loss.float()
            logs = {"l1": l1.item(), "codebook": codebook_loss.item()}
            adaptive = adversarial and w.adversarial_weight == "adaptive"
            loss = loss + self.shared_generator_losses(
                recon, frames, adversarial, logs, reconstruction=w.l1 * l1 if adaptive else None,
                last_layer=self.last_layer() if adaptive else None)
        ctx.optimize("net", loss)
        logs["loss"] = loss.item()
        if adversarial:
            self.discriminator_step(frames, recon, ctx, logs)
        return logs

    def last_layer(self) -> torch.Tensor:
        """The weight of the generator's last layer (the output convolution): where the VQGAN rule
        compares gradient norms."""
        weights = [p for n, p in self.net.generator.named_parameters() if n.endswith("weight") and p.dim() == 4]
        return weights[-1]

    @torch.no_grad()
    def restore(self, net: nn.Module, batch: Dict[str, torch.Tensor]) -> torch.Tensor:
        gt = batch["gt"]
        recon = net(gt.flatten(0, 1))[0]
        return recon.view_as(gt).clamp(-1, 1)

    def image_grid_inputs(self, batch, output):
        return [output[0], batch["gt"][0]]
