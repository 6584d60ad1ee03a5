"""Stage III: CFT and CFA on top of the frozen stage II network (supplement Eq. 5-8).

    L_III = λ₁‖y − ŷ‖₁ + λ_per·L_per + λ_adv·L_adv(D_3D) + λ_temp·L_temp

with λ₁ = 0.01, λ_per = 1, λ_adv = 0.1, λ_temp = 0.1 (supplement); D_3D the temporal PatchGAN
(:class:`keep.archs.discriminator.TemporalPatchDiscriminator`); L_temp the flow-warped L1 with the
flow of the GT frames and the forward-backward mask (:class:`keep.losses.TemporalLoss`), or with
``losses.temporal_scales`` the release's Charbonnier on the decoder features at those scales
(:class:`keep.losses.FeatureTemporalLoss`). The release's weights are L1 0.1, GAN 0.01
(configs/release/stage3.yaml). Codes are
detached (``detach_codes=True``): only the fusion modules learn. They should start from an init that
can learn and whose first steps are bounded: ``fusion_init: gated`` (default, :func:`init_fusion`;
``official`` is the release's all-zero init, :func:`init_fusion_official`),
applied to every CFT/CFA block that no ``init:`` entry loaded (``exclude`` them when initialising
from stage II; a fine-tune from a stage III file keeps its trained blocks).
"""
from __future__ import annotations

from typing import Dict, List

import torch
import torch.nn.functional as F
from torch import nn

from keep.archs.fusion import CFABlock, CFTBlock
from keep.losses import FeatureTemporalLoss, TemporalLoss
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


def init_fusion_official(net: nn.Module, skip: frozenset = frozenset()) -> List[str]:
    """The release's init of CFT and CFA (``keep_arch.py:189-195, 239-249``): every convolution of a
    CFT block (its inner ResBlock included) and every linear layer of a CFA block, weights and biases,
    zero. Only a few biases and the LayerNorm affines can then receive a gradient (most products stay
    0 x 0), so the blocks learn per-channel offsets only: reproduced by ``fusion_init: official``, not
    recommended (see docs/training.md). Blocks with a parameter in ``skip`` (loaded) are left alone."""
    done = []
    for name, module in net.named_modules():
        if not isinstance(module, (CFABlock, CFTBlock)) or any(k.startswith(name + ".") for k in skip):
            continue
        layer_type = nn.Conv2d if isinstance(module, CFTBlock) else nn.Linear
        with torch.no_grad():
            for layer in module.modules():
                if isinstance(layer, layer_type):
                    for param in layer.parameters():
                        param.zero_()
        done.append(name)
    return done


FUSION_INITS = {"gated": init_fusion, "official": init_fusion_official}


@MODELS.register("stage3")
class FusionStage(StageModel):
    stage = 3

    def __init__(self, cfg):
        super().__init__(cfg)
        w = cfg.losses
        self.temporal = None
        if w.temporal > 0:  # decoder scales listed: the release's feature loss; none: RGB (Eq. 7-8)
            self.temporal = (FeatureTemporalLoss() if w.temporal_scales
                             else TemporalLoss(w.consistency_alpha, w.consistency_beta))
        scales = getattr(getattr(self.net, "generator", None), "fuse_index", {})
        wrong = [s for s in w.temporal_scales if str(s) not in scales]
        if w.temporal > 0 and wrong:
            raise ValueError(f"losses.temporal_scales: {wrong} are not decoder resolutions of this network "
                             f"({sorted(scales, key=int)})")

    def after_init(self, loaded: frozenset = frozenset()) -> None:
        if self.cfg.fusion_init in FUSION_INITS:  # "net": as the network built them
            FUSION_INITS[self.cfg.fusion_init](self.net, frozenset(loaded))

    def _flow(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """GT flow for the temporal loss, in fp32 even under AMP (the consistency mask is a threshold)."""
        with torch.autocast(a.device.type, enabled=False):
            return self.net.flownet(a.float(), b.float())

    def training_step(self, batch: Dict[str, torch.Tensor], step: int, ctx) -> Dict[str, float]:
        w = self.cfg.losses
        gt = batch["gt"]
        adversarial = self.adversarial_on(step)
        with ctx.autocast():
            scales = list(w.temporal_scales) if self.temporal is not None else []
            result = self.runners["net"](upsample_like(batch["lq"], gt), detach_codes=True, feature_scales=scales)
            out = result.frames
            l1 = F.l1_loss(out.float(), gt)
            loss = w.l1 * l1
            logs = {"l1": l1.item()}
            if isinstance(self.temporal, FeatureTemporalLoss):
                with torch.no_grad():  # GT flow t -> t-1 at full size (keep_gan_model.py:189-196)
                    c, h, wd = gt.shape[-3:]
                    flows = self._flow(gt[:, 1:].reshape(-1, c, h, wd), gt[:, :-1].reshape(-1, c, h, wd))
                temp = self.temporal(result.gen_feats, flows)
                loss = loss + w.temporal * temp
                logs["temporal"] = temp.item()
            elif self.temporal is not None:
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
