"""Stage III: CFT and CFA on top of the frozen stage II network (supplement Eq. 5-8).

    L_III = λ₁‖y − ŷ‖₁ + λ_per·L_per + λ_adv·L_adv(D_3D) + λ_temp·L_temp

with λ₁ = 0.01, λ_per = 1, λ_adv = 0.1, λ_temp = 0.1 (supplement); D_3D the temporal PatchGAN
(:class:`keep.archs.discriminator.TemporalPatchDiscriminator`); L_temp the flow-warped L1 with the
flow of the GT frames and the forward-backward mask (:class:`keep.losses.TemporalLoss`). Codes are
detached (``detach_codes=True``): only the fusion modules learn. They must start from an init that
can learn and whose first steps are bounded: ``fusion_init: gated`` (default, :func:`init_fusion`),
applied to every CFT/CFA block that no ``init:`` entry loaded (``exclude`` them when initialising
from stage II; a fine-tune from a stage III file keeps its trained blocks).
"""
from __future__ import annotations

from typing import Dict, List

import torch
import torch.nn.functional as F
from torch import nn

from keep.archs.fusion import CFABlock, CFTBlock
from keep.losses import TemporalLoss
from keep.models.base import StageModel, upsample_like
from keep.registry import MODELS


# CFT's scale/shift branches start with their first convolution scaled by this (their last one is zero)
CFT_HIDDEN_SCALE = 1e-2


def init_fusion(net: nn.Module, skip: frozenset = frozenset()) -> List[str]:
    """Start CFT and CFA as identities whose change in the first Adam steps stays small.

    Why: Adam's first step moves every weight by about ``lr`` whatever its gradient's size, so how
    much an identity-at-init block moves is set by what multiplies the weights that start at zero.

    * CFA (``x + LN1(attn) ; x + LN2(ff)``, post-norm): with only the last projections zero
      (``zero_init: last``) the branch becomes tiny but non-zero after one step, and the LayerNorm
      rescales it to unit size: the fused features jumped by 38 % in one step at lr 1e-4. Here the
      LayerNorms' gain and bias start at 0 instead (a ReZero / LayerScale gate) and the last
      projections keep a default random init, so the block is still an identity, the gate's
      gradient is the normalised branch (non-zero), and one step adds at most ~lr per element.
    * CFT (``dec + dec·scale(e) + shift(e)``): the last convolutions stay zero; the first ones of
      the scale/shift branches are scaled by :data:`CFT_HIDDEN_SCALE`, so the hidden activations the
      zero weights multiply (their first-step change: lr x fan-in x |hidden|) are small.

    Blocks with a parameter name in ``skip`` (loaded by ``init:``) are left alone. Returns the
    names of the blocks initialised."""
    done = []
    for name, module in net.named_modules():
        if not isinstance(module, (CFABlock, CFTBlock)):
            continue
        if any(k.startswith(name + ".") for k in skip):
            continue
        with torch.no_grad():
            if isinstance(module, CFABlock):
                for norm in (module.norm1, module.norm2):
                    nn.init.zeros_(norm.weight)
                    nn.init.zeros_(norm.bias)
                for layer in (module.attn.to_out[0], module.ff.net[2]):
                    layer.reset_parameters()
            else:
                for branch in (module.scale, module.shift):
                    branch[0].weight.mul_(CFT_HIDDEN_SCALE)
                    branch[0].bias.mul_(CFT_HIDDEN_SCALE)
                    nn.init.zeros_(branch[2].weight)
                    nn.init.zeros_(branch[2].bias)
        done.append(name)
    return done


@MODELS.register("stage3")
class FusionStage(StageModel):
    stage = 3

    def __init__(self, cfg):
        super().__init__(cfg)
        w = cfg.losses
        self.temporal = TemporalLoss(w.consistency_alpha, w.consistency_beta) if w.temporal > 0 else None

    def after_init(self, loaded: frozenset = frozenset()) -> None:
        if self.cfg.fusion_init == "gated":
            init_fusion(self.net, frozenset(loaded))

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
