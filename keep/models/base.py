"""What the three training stages share.

A stage is algorithm only: it builds its networks and losses from the config and defines one
training step and the validation forward. The engine (:mod:`keep.engine.trainer`) owns devices,
DDP wrapping, optimisers, AMP, EMA, checkpoints and logging, and hands the step a
:class:`keep.engine.step.StepContext` to run the backward passes through.
"""
from __future__ import annotations

from typing import Dict, List, Optional

import torch
import torch.nn.functional as F
from torch import nn

import keep.archs  # noqa: F401  (registers the networks)
from keep.engine.config import TrainConfig
from keep.losses import GANLoss, LPIPSLoss, PerceptualLoss
from keep.registry import ARCHS


class StageModel:
    """Holds ``net`` (the trained network; EMA and export are of this one) and optionally ``disc``.

    ``runners`` maps those names to what the forward must call: the module itself, or its DDP
    wrapper (set by the trainer) so that gradients are synchronised.
    """

    stage: int = 0

    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        self.net: nn.Module = ARCHS.build(cfg.net)
        self.disc: Optional[nn.Module] = ARCHS.build(cfg.discriminator) if cfg.discriminator else None
        self.runners: Dict[str, nn.Module] = dict(self.networks())
        w = cfg.losses
        self.perceptual = None
        if w.perceptual > 0:
            if w.perceptual_type == "vgg":
                self.perceptual = PerceptualLoss(w.perceptual_layers, w.perceptual_pretrained, seed=cfg.seed)
            else:  # lpips_vgg | lpips_vgg_release (the release's double input normalisation)
                self.perceptual = LPIPSLoss(w.perceptual_pretrained, seed=cfg.seed,
                                            input_norm="imagenet" if w.perceptual_type == "lpips_vgg_release" else "none")
        self.gan = GANLoss(w.gan_type) if w.adversarial > 0 else None
        if self.gan is not None and self.disc is None:
            raise ValueError(f"stage {self.stage}: losses.adversarial > 0 needs a `discriminator:` spec")

    def after_init(self, loaded: frozenset = frozenset()) -> None:
        """Called once after ``init:`` was applied (``loaded``: the names it set), before freezing."""

    def networks(self) -> Dict[str, nn.Module]:
        nets = {"net": self.net}
        if self.disc is not None:
            nets["disc"] = self.disc
        return nets

    def to(self, device: torch.device) -> "StageModel":
        for m in (self.net, self.disc, self.perceptual):
            if m is not None:
                m.to(device)
        return self

    def train(self, mode: bool = True) -> None:
        for m in self.networks().values():
            m.train(mode)

    def notes(self) -> List[str]:
        """Lines the trainer logs once at start (e.g. a random perceptual backbone)."""
        if self.perceptual is not None and not self.perceptual.pretrained:
            backbone = "VGG-19" if self.cfg.losses.perceptual_type == "vgg" else "LPIPS VGG-16 backbone"
            return [f"perceptual loss: RANDOMLY INITIALISED {backbone} (losses.perceptual_pretrained: false) - "
                    "a smoke-test setting, not a meaningful perceptual loss"]
        return []

    def adversarial_on(self, step: int) -> bool:
        return self.gan is not None and step >= self.cfg.losses.disc_start

    def shared_generator_losses(self, out: torch.Tensor, gt: torch.Tensor, adversarial: bool,
                                logs: Dict[str, float], reconstruction: Optional[torch.Tensor] = None,
                                last_layer: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Weighted perceptual + adversarial terms of the generator loss (call under autocast).

        ``out``/``gt``: (N, 3, H, W) frames or (B, T, 3, H, W) clips; the perceptual loss sees frames,
        the discriminator sees ``out`` as given (2-D patch D on frames, 3-D temporal D on clips).
        With ``last_layer`` (a weight of the generator's last layer) and ``reconstruction`` (the
        weighted pixel terms) the adversarial weight is adaptive (:func:`adaptive_weight`)."""
        w = self.cfg.losses
        loss = out.new_zeros(())
        if self.perceptual is not None:
            per = self.perceptual(out.reshape(-1, *out.shape[-3:]), gt.reshape(-1, *gt.shape[-3:]))
            loss = loss + w.perceptual * per
            logs["perceptual"] = per.item()
        if adversarial:
            # the generator's view of D: the raw module (D's gradients here are discarded)
            g_adv = self.gan.generator_loss(self.disc(out))
            weight = w.adversarial
            if last_layer is not None:
                ratio = adaptive_weight(reconstruction + loss, g_adv, last_layer, w.adaptive_weight_max)
                weight = weight * ratio * w.adaptive_weight_scale   # the release's x 0.8 (vqgan_model.py:156)
                logs["adv_weight"] = float(weight)
            loss = loss + weight * g_adv
            logs["g_adv"] = g_adv.item()
        return loss

    def discriminator_step(self, real: torch.Tensor, fake: torch.Tensor, ctx, logs: Dict[str, float]) -> None:
        """One D update on real and (detached) fake; a single DDP forward per backward.

        ``losses.disc_passes: joint``: one forward of [real, fake] (a BatchNorm D normalises them as one
        batch), loss 0.5 (real + fake). ``separate`` (the release, vqgan_model.py:170-183): a forward and
        backward of the real batch, then of the fake one, gradients summed, one step; loss real + fake."""
        disc = self.runners["disc"]
        if self.cfg.losses.disc_passes == "separate":
            def real_loss() -> torch.Tensor:
                with ctx.autocast():
                    return self.gan.discriminator_real_loss(disc(real))

            def fake_loss() -> torch.Tensor:
                with ctx.autocast():
                    return self.gan.discriminator_fake_loss(disc(fake.detach()))
            parts = ctx.optimize_accumulated("disc", [real_loss, fake_loss], disc)
            logs.update({"d_loss_real": parts[0], "d_loss_fake": parts[1], "d_loss": parts[0] + parts[1]})
            return
        with ctx.autocast():
            real_logits, fake_logits = disc(torch.cat([real, fake.detach()])).chunk(2)
            d_loss = self.gan.discriminator_loss(real_logits, fake_logits)
        ctx.optimize("disc", d_loss)
        logs["d_loss"] = d_loss.item()

    def training_step(self, batch: Dict[str, torch.Tensor], step: int, ctx) -> Dict[str, float]:
        raise NotImplementedError

    @torch.no_grad()
    def restore(self, net: nn.Module, batch: Dict[str, torch.Tensor]) -> torch.Tensor:
        """Validation forward with ``net`` (the EMA copy or the raw one): (B, T, 3, H, W) in [-1, 1]."""
        raise NotImplementedError

    def image_grid_inputs(self, batch: Dict[str, torch.Tensor], output: torch.Tensor) -> List[torch.Tensor]:
        """Rows of the logged image grid for the first clip: LQ (upsampled), output, GT; each (T, 3, H, W)."""
        return [upsample_like(batch["lq"], batch["gt"])[0], output[0].clamp(-1, 1), batch["gt"][0]]


def adaptive_weight(reconstruction: torch.Tensor, adversarial: torch.Tensor, last_layer: torch.Tensor,
                    max_weight: float) -> torch.Tensor:
    """The VQGAN rule (Esser et al. 2021, Eq. 7): ``||∇_L rec|| / (||∇_L adv|| + 1e-4)`` at the
    generator's last layer L, clamped to ``[0, max_weight]``, no gradient. It keeps the adversarial
    gradient at the output no larger than the reconstruction's (times the config's factor), whatever
    the discriminator's scale; a fixed weight let a freshly started D swamp the reconstruction.

    ``torch.autograd.grad`` with ``inputs`` runs no AccumulateGrad node, so DDP's gradient hooks do
    not fire here; every rank computes its own weight from its own batch (as the VQGAN code does)."""
    rec_grad = torch.autograd.grad(reconstruction, last_layer, retain_graph=True)[0]
    adv_grad = torch.autograd.grad(adversarial, last_layer, retain_graph=True)[0]
    ratio = rec_grad.float().norm() / (adv_grad.float().norm() + 1e-4)
    return ratio.clamp(0.0, max_weight).detach()


def upsample_like(lq: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """The final ↑ of Eq. 9 when the dataset left the LQ clip small: bilinear to the GT size (what
    the release's ``need_upscale`` does inside the network). (B, T, 3, h, w) -> (B, T, 3, H, W)."""
    if lq.shape[-2:] == gt.shape[-2:]:
        return lq
    b, t = lq.shape[:2]
    up = F.interpolate(lq.flatten(0, 1), size=gt.shape[-2:], mode="bilinear", align_corners=False)
    return up.view(b, t, *up.shape[1:])
