"""Stage II: LQ encoder E_L, code transformer and Kalman filter network (supplement Eq. 4).

    L_II = L_CE(logits, idx_gt) + ‖E_L(x) − sg(codebook[idx_gt])‖²

Targets come from the frozen HQ path on the GT frames: ``idx_gt`` = nearest code of E_H(y) (the
stage I encoder, held by KEEP as ``hq_encoder``). The codebook, generator and E_H are frozen by the
config (``frozen:``); codes pass straight through to the fused state (``detach_codes=False``). The
v1.0.0 release detaches them (``detach_16=True``, keep_model.py:136-137); no stage II loss uses the
decoded frames, so the gradients are the same; ours only keeps a graph the losses do not need.
"""
from __future__ import annotations

from typing import Dict

import torch
from torch import nn

from keep.losses import code_cross_entropy, code_feature_loss
from keep.models.base import StageModel, upsample_like
from keep.registry import MODELS


@MODELS.register("stage2")
class CodePredictionStage(StageModel):
    stage = 2

    @torch.no_grad()
    def code_targets(self, gt: torch.Tensor):
        """GT code indices (B*T, h*w) and their codebook vectors (B*T, C, h, w) from E_H(y)."""
        z, _ = self.net.hq_encoder(gt.flatten(0, 1))
        indices = self.net.quantize.nearest(z)
        return indices, self.net.quantize.lookup(indices, z.shape[-2:])

    def training_step(self, batch: Dict[str, torch.Tensor], step: int, ctx) -> Dict[str, float]:
        w = self.cfg.losses
        gt = batch["gt"]
        indices, target_feat = self.code_targets(gt)  # full precision: targets must not flip with AMP
        with ctx.autocast():
            out = self.runners["net"](upsample_like(batch["lq"], gt), detach_codes=False)
            ce = code_cross_entropy(out.logits.flatten(0, 1), indices)
            feat = code_feature_loss(out.z_obs.flatten(0, 1), target_feat)
            loss = w.cross_entropy * ce + w.feature * feat
        ctx.optimize("net", loss)
        accuracy = (out.indices.flatten(0, 1) == indices).float().mean()
        return {"loss": loss.item(), "ce": ce.item(), "feature": feat.item(), "code_acc": accuracy.item()}

    @torch.no_grad()
    def restore(self, net: nn.Module, batch: Dict[str, torch.Tensor]) -> torch.Tensor:
        return net(upsample_like(batch["lq"], batch["gt"]), return_intermediates=True).frames.clamp(-1, 1)
