"""PSNR and SSIM in the BasicSR convention (``basicsr/metrics/psnr_ssim.py``), which the paper's
baselines (CodeFormer, GFPGAN, BasicVSR++, ...) report with.

Convention used by ``keep eval`` (written in every summary):

* value range 0–255, computed in float64 on uint8 frames;
* colour: **RGB**, all three channels (``y_channel=False``, columns ``psnr`` / ``ssim``) *and*
  BasicSR's ``test_y_channel`` variant (``y_channel=True``, columns ``psnr_y`` / ``ssim_y``): ITU-R
  BT.601 luma of RGB on 0–255, studio range 16–235 (MATLAB ``rgb2ycbcr``), computed in float64
  without rounding. Both are reported because they differ by about 1.5 dB on face frames and papers
  use either;
* ``crop_border = 0`` (faces are aligned 512×512 crops; no border is shaved);
* PSNR = 10·log10(255² / MSE) over all pixels and channels of one frame (inf for identical frames);
* SSIM: Wang et al. 2004 with an 11×11 Gaussian window, σ = 1.5, K1 = 0.01, K2 = 0.03, statistics
  over the window's "valid" region (5 pixels per side dropped), computed per channel and averaged.
"""
from __future__ import annotations

import cv2
import numpy as np

from keep.registry import METRICS


def _prepare(img: np.ndarray, crop_border: int, y_channel: bool) -> np.ndarray:
    """(H, W, 3) uint8/float RGB on 0–255 -> float64 (H', W', C)."""
    img = np.asarray(img, dtype=np.float64)
    if img.ndim == 2:
        img = img[..., None]
    if crop_border:
        img = img[crop_border:-crop_border, crop_border:-crop_border]
    if y_channel:
        if img.shape[-1] != 3:
            raise ValueError("y_channel=True needs RGB frames")
        # ITU-R BT.601 luma on 0-255 RGB, as MATLAB rgb2ycbcr (BasicSR's to_y_channel)
        y = 16.0 + (65.481 * img[..., 0] + 128.553 * img[..., 1] + 24.966 * img[..., 2]) / 255.0
        img = y[..., None]
    return img


def _check_pair(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {a.shape} vs {b.shape}")


def psnr(pred: np.ndarray, gt: np.ndarray, crop_border: int = 0, y_channel: bool = False) -> float:
    """PSNR in dB of two (H, W, 3) RGB images on the 0–255 scale; ``inf`` when identical."""
    _check_pair(pred, gt)
    a, b = _prepare(pred, crop_border, y_channel), _prepare(gt, crop_border, y_channel)
    mse = np.mean((a - b) ** 2)
    return float("inf") if mse == 0 else float(10.0 * np.log10(255.0 ** 2 / mse))


def _ssim_channel(a: np.ndarray, b: np.ndarray) -> float:
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    g = cv2.getGaussianKernel(11, 1.5)   # the 2-D window is g g^T: filter rows then columns

    def filt(x: np.ndarray) -> np.ndarray:
        return cv2.sepFilter2D(x, -1, g, g)[5:-5, 5:-5]   # keep only windows fully inside the image

    mu_a, mu_b = filt(a), filt(b)
    var_a = filt(a * a) - mu_a ** 2
    var_b = filt(b * b) - mu_b ** 2
    cov = filt(a * b) - mu_a * mu_b
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))
    return float(ssim_map.mean())


def ssim(pred: np.ndarray, gt: np.ndarray, crop_border: int = 0, y_channel: bool = False) -> float:
    """SSIM of two (H, W, 3) RGB images on the 0–255 scale (mean over channels); 1 when identical."""
    _check_pair(pred, gt)
    a, b = _prepare(pred, crop_border, y_channel), _prepare(gt, crop_border, y_channel)
    if min(a.shape[:2]) < 11:
        raise ValueError(f"SSIM needs frames of at least 11x11 pixels, got {a.shape[:2]}")
    return float(np.mean([_ssim_channel(a[..., c], b[..., c]) for c in range(a.shape[-1])]))


class _FramewiseMetric:
    """Applies an image metric to every frame pair of a clip: (T, H, W, 3) uint8 x2 -> (T,) float64."""

    name: str
    higher_is_better = True

    def __init__(self, fn, crop_border: int = 0, y_channel: bool = False):
        self.fn, self.crop_border, self.y_channel = fn, crop_border, y_channel
        self.label = self.name + ("_y" if y_channel else "")
        self.backbone = ""
        self.convention = (f"{'Y: BT.601 luma 16-235 of RGB 0-255 (BasicSR test_y_channel)' if y_channel else 'RGB, all 3 channels'}"
                           f", 0-255, float64, crop_border {crop_border}")

    def __call__(self, pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
        return np.array([self.fn(p, g, self.crop_border, self.y_channel) for p, g in zip(pred, gt)])


@METRICS.register("psnr")
class PSNR(_FramewiseMetric):
    name = "psnr"

    def __init__(self, crop_border: int = 0, y_channel: bool = False):
        super().__init__(psnr, crop_border, y_channel)


@METRICS.register("ssim")
class SSIM(_FramewiseMetric):
    name = "ssim"

    def __init__(self, crop_border: int = 0, y_channel: bool = False):
        super().__init__(ssim, crop_border, y_channel)
