"""VGG-19 perceptual loss (the L_per of supplement Eq. 3 and Eq. 6).

With ``pretrained: true`` the ImageNet VGG-19 (``keep.weights`` name ``vgg19``) is required and
checked before training starts; with ``pretrained: false`` the backbone is randomly initialised
(seeded), which is only meaningful for smoke runs and is logged as such.
"""
from __future__ import annotations

from typing import Dict

import torch
import torch.nn.functional as F
from torchvision.models.vgg import cfgs as vgg_cfgs, make_layers
from torch import nn

from keep.registry import LOSSES
from keep.weights import get_weight

# torchvision's vgg19().features indices of the convolutions, named as in the VGG paper
VGG19_CONVS = {
    "conv1_1": 0, "conv1_2": 2, "conv2_1": 5, "conv2_2": 7, "conv3_1": 10, "conv3_2": 12, "conv3_3": 14,
    "conv3_4": 16, "conv4_1": 19, "conv4_2": 21, "conv4_3": 23, "conv4_4": 25, "conv5_1": 28, "conv5_2": 30,
    "conv5_3": 32, "conv5_4": 34,
}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def vgg19_features_state(path) -> Dict[str, torch.Tensor]:
    """The convolutional part of torchvision's ``vgg19-dcbb9e9d.pth`` (a raw state dict with
    ``features.N.*`` and ``classifier.*`` keys) under ``make_layers`` names (``N.*``)."""
    from keep.checkpoint import load_checkpoint
    state, _ = load_checkpoint(path)
    return {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}


@LOSSES.register()
class PerceptualLoss(nn.Module):
    """Weighted L1 distance between VGG-19 features (taken before the ReLU, as BasicSR does).

    Inputs: (N, 3, H, W) RGB in [-1, 1]; they are mapped to [0, 1] and ImageNet-normalised.
    The backbone is frozen and kept in eval mode.
    """

    def __init__(self, layer_weights: Dict[str, float] = None, pretrained: bool = True, seed: int = 0):
        super().__init__()
        self.layer_weights = dict(layer_weights or {"conv1_2": 0.1, "conv2_2": 0.1, "conv3_4": 1.0,
                                                     "conv4_4": 1.0, "conv5_4": 1.0})
        unknown = [k for k in self.layer_weights if k not in VGG19_CONVS]
        if unknown:
            raise ValueError(f"unknown VGG-19 layer(s) {unknown}; known: {list(VGG19_CONVS)}")
        self.pretrained = pretrained
        last = max(VGG19_CONVS[k] for k in self.layer_weights)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)  # a random backbone must be the same on every rank and every resume
            features = make_layers(vgg_cfgs["E"])  # VGG-19's convolutional part, torchvision's layout
        if pretrained:
            features.load_state_dict(vgg19_features_state(get_weight("vgg19", download=False)), strict=True)
        # torchvision builds its ReLUs in place: each would overwrite the conv output tapped just
        # before it, turning the pre-ReLU features (BasicSR's, which clones each tap) into post-ReLU ones.
        for i, layer in enumerate(features):
            if isinstance(layer, nn.ReLU):
                features[i] = nn.ReLU(inplace=False)
        self.features = features[:last + 1]
        self._taps = {VGG19_CONVS[k]: k for k in self.layer_weights}
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "PerceptualLoss":
        return super().train(False)  # the backbone never leaves eval mode

    def _features(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        x = ((x + 1) / 2 - self.mean) / self.std
        out = {}
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self._taps:
                out[self._taps[i]] = x
        return out

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        fp = self._features(pred)
        with torch.no_grad():
            ft = self._features(target.detach())
        return sum(w * F.l1_loss(fp[k].float(), ft[k].float()) for k, w in self.layer_weights.items())
