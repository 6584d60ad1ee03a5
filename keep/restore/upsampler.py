"""Real-ESRGAN x2 (RRDBNet) background / face upsampler, tiled so any frame size fits in memory.

Network of Wang et al., "Real-ESRGAN" (2021): ESRGAN's residual-in-residual dense blocks; the x2
model first folds 2x2 pixels into channels (pixel unshuffle) and then upsamples x4. State-dict
key names follow the released ``RealESRGAN_x2plus.pth`` so it loads strictly.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from keep.weights import get_weight


class DenseBlock(nn.Module):
    """Five 3x3 convs, each fed all previous outputs; residual scaled by 0.2. (B, C, H, W) -> same."""

    def __init__(self, channels: int = 64, growth: int = 32):
        super().__init__()
        for k in range(5):
            out = channels if k == 4 else growth
            setattr(self, f"conv{k + 1}", nn.Conv2d(channels + k * growth, out, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [x]
        for k in range(1, 5):
            feats.append(F.leaky_relu(getattr(self, f"conv{k}")(torch.cat(feats, 1)), 0.2))
        return x + 0.2 * self.conv5(torch.cat(feats, 1))


class ResidualInResidual(nn.Module):
    """Three dense blocks with an outer residual scaled by 0.2."""

    def __init__(self, channels: int = 64, growth: int = 32):
        super().__init__()
        self.rdb1, self.rdb2, self.rdb3 = (DenseBlock(channels, growth) for _ in range(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 0.2 * self.rdb3(self.rdb2(self.rdb1(x)))


class RRDBNet(nn.Module):
    """x2 RRDBNet: (B, 3, H, W) in [0, 1], H and W even -> (B, 3, 2H, 2W) (unclamped)."""

    def __init__(self, channels: int = 64, blocks: int = 23, growth: int = 32):
        super().__init__()
        self.conv_first = nn.Conv2d(3 * 4, channels, 3, 1, 1)
        self.body = nn.Sequential(*(ResidualInResidual(channels, growth) for _ in range(blocks)))
        self.conv_body = nn.Conv2d(channels, channels, 3, 1, 1)
        self.conv_up1 = nn.Conv2d(channels, channels, 3, 1, 1)
        self.conv_up2 = nn.Conv2d(channels, channels, 3, 1, 1)
        self.conv_hr = nn.Conv2d(channels, channels, 3, 1, 1)
        self.conv_last = nn.Conv2d(channels, 3, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.conv_first(F.pixel_unshuffle(x, 2))
        feat = feat + self.conv_body(self.body(feat))
        for conv in (self.conv_up1, self.conv_up2):
            feat = F.leaky_relu(conv(F.interpolate(feat, scale_factor=2, mode="nearest")), 0.2)
        return self.conv_last(F.leaky_relu(self.conv_hr(feat), 0.2))


def load_rrdbnet(path) -> RRDBNet:
    """``RealESRGAN_x2plus.pth`` into the x2 RRDBNet (23 blocks, 64 features, growth 32), strictly,
    eval mode. As Real-ESRGAN's ``RealESRGANer``: ``params_ema`` if the file has it, else ``params``
    (or a raw state dict; ``module.`` prefixes stripped), see :func:`keep.checkpoint.unwrap_checkpoint`."""
    from keep.checkpoint import load_checkpoint, load_state_dict_into
    state, _ = load_checkpoint(path)
    net = RRDBNet()
    load_state_dict_into(net, state, source=str(path))
    return net.eval()


class RealESRGANUpsampler:
    """``enhance(image)``: (H, W, 3) uint8 RGB -> (2H, 2W, 3) uint8, run in tiles of ``tile`` px
    with ``tile_pad`` px of context each side (release: 400 and 40; 0 = whole image at once)."""

    scale = 2

    def __init__(self, device: torch.device, tile: int = 400, tile_pad: int = 40, half: bool = False,
                 net: nn.Module = None, download: bool = True):
        if net is None:
            net = load_rrdbnet(get_weight("realesrgan-x2", download=download))
        self.net = net.eval().to(device)
        self.device = device
        self.dtype = torch.float16 if half and device.type == "cuda" else torch.float32
        self.net.to(self.dtype)
        # Tiles and their context must be even for the pixel unshuffle.
        self.tile = 2 * (tile // 2)
        self.tile_pad = 2 * math.ceil(tile_pad / 2)

    @torch.inference_mode()
    def _run(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.to(self.dtype)).float()

    @torch.inference_mode()
    def enhance(self, image: np.ndarray) -> np.ndarray:
        height, width = image.shape[:2]
        x = torch.from_numpy(image).to(self.device).permute(2, 0, 1)[None].float() / 255.0
        # Odd sizes: reflect-pad to even, crop the output afterwards.
        x = F.pad(x, (0, width % 2, 0, height % 2), mode="reflect") if (width % 2 or height % 2) else x
        if self.tile <= 0 or max(x.shape[-2:]) <= self.tile:
            out = self._run(x)
        else:
            out = torch.empty(1, 3, 2 * x.shape[2], 2 * x.shape[3], device=self.device)
            for y0 in range(0, x.shape[2], self.tile):
                for x0 in range(0, x.shape[3], self.tile):
                    y1, x1 = min(y0 + self.tile, x.shape[2]), min(x0 + self.tile, x.shape[3])
                    py0, px0 = max(y0 - self.tile_pad, 0), max(x0 - self.tile_pad, 0)
                    py1, px1 = min(y1 + self.tile_pad, x.shape[2]), min(x1 + self.tile_pad, x.shape[3])
                    part = self._run(x[:, :, py0:py1, px0:px1])
                    out[:, :, 2 * y0:2 * y1, 2 * x0:2 * x1] = part[:, :, 2 * (y0 - py0):2 * (y1 - py0),
                                                                   2 * (x0 - px0):2 * (x1 - px0)]
        out = out[:, :, :2 * height, :2 * width].clamp(0, 1).mul(255).round().byte()
        return out[0].permute(1, 2, 0).cpu().numpy()
