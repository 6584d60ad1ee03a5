"""Stage III: CFT and CFA on top of the frozen stage II network (supplement Eq. 5-8).

    L_III = λ₁‖y − ŷ‖₁ + λ_per·L_per + λ_adv·L_adv(D_3D) + λ_temp·L_temp

with λ₁ = 0.01, λ_per = 1, λ_adv = 0.1, λ_temp = 0.1 (supplement); D_3D the temporal PatchGAN
(:class:`keep.archs.discriminator.TemporalPatchDiscriminator`); L_temp the flow-warped L1 with the
flow of the GT frames and the forward-backward mask (:class:`keep.losses.TemporalLoss`). Codes are
detached (``detach_codes=True``): only the fusion modules learn. They must start from an init that
can learn (``zero_init: last`` in the net spec, and ``exclude`` them when initialising from stage II).
"""
from __future__ import annotations

from typing import Dict

import torch
import torch.nn.functional as F
from torch import nn

from keep.losses import TemporalLoss
from keep.models.base import StageModel, upsample_like
from keep.registry import MODELS


@MODELS.register("stage3")
class FusionStage(StageModel):
    stage = 3

    def __init__(self, cfg):
        super().__init__(cfg)
        w = cfg.losses
        self.temporal = TemporalLoss(w.consistency_alpha, w.consistency_beta) if w.temporal > 0 else None

    def _flow(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """GT flow for the temporal loss, in fp32 even under AMP (the consistency mask is a threshold)."""
        with torch.autocast(a.device.type, enabled=False):
            return self.net.flownet(a.float(), b.float())

    def training_step(self, batch: Dict[str, torch.Tensor], step: int, ctx) -> Dict[str, float]:
        w = self.cfg.losses
        gt = batch["gt"]
        adversarial = self.adversarial_on(step)
        with ctx.autocast():
            out = self.runners["net"](upsample_like(batch["lq"], gt), detach_codes=True).frames
            l1 = F.l1_loss(out.float(), gt)
            loss = w.l1 * l1
            logs = {"l1": l1.item()}
            if self.temporal is not None:
                temp = self.temporal(out, gt, self._flow)
                loss = loss + w.temporal * temp
                logs["temporal"] = temp.item()
            loss = loss + self.shared_generator_losses(out, gt, adversarial, logs)
        ctx.optimize("net", loss)
        logs["loss"] = loss.item()
        if adversarial:
            self.discriminator_step(gt, out, ctx, logs)
        return logs

    @torch.no_grad()
    def restore(self, net: nn.Module, batch: Dict[str, torch.Tensor]) -> torch.Tensor:
        return net(upsample_like(batch["lq"], batch["gt"]), return_intermediates=True).frames.clamp(-1, 1)
