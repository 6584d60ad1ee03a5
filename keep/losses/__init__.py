"""Training losses (supplement Eq. 3-8), registered in :data:`keep.registry.LOSSES` where configurable."""
from keep.losses.code import code_cross_entropy, code_feature_loss
from keep.losses.gan import GANLoss
from keep.losses.lpips_loss import LPIPSLoss
from keep.losses.perceptual import PerceptualLoss
from keep.losses.temporal import FeatureTemporalLoss, TemporalLoss, consistency_mask, resize_flow

__all__ = ["FeatureTemporalLoss", "GANLoss", "LPIPSLoss", "PerceptualLoss", "TemporalLoss", "code_cross_entropy",
           "code_feature_loss", "consistency_mask", "resize_flow"]
