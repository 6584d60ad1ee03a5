"""The video degradation model of the paper (supplement Eq. 9), with the release's order as an option.

Eq. 9:  x = {[(y ⊛ k_σ)↓ + n_δ]_codec}↑

* ``y``: a clean clip (T, H, W, 3) uint8 RGB; ``k_σ``: an isotropic Gaussian kernel; ``↓``/``↑``: ×4
  resize; ``n_δ``: Gaussian noise of std δ on the 0–255 scale; ``codec``: H.264 at a constant rate
  factor (CRF), the whole clip encoded as one video so that the artefacts depend on neighbouring frames.
* One draw of (σ, δ, CRF) per clip (a *video* degradation); only the noise samples differ per frame.

The official release codes a different pipeline (``spec/official-TRAINING.md`` §1–2):
blur → noise → ↓ → noise → codec, and the ×4 bilinear up-scale happens inside the network. Its order is
available as :data:`RELEASE_ORDER`; its BGR-passed-as-RGB quirk in the encoder is deliberately *not*
reproduced (RGB is handed to the encoder as RGB, so the RGB→YUV matrix sees the right channels).

Determinism: the same params, config and noise generator give the same bytes. x264 runs on one
thread without assembly (see ``_X264_OPTIONS``), the container is built in memory, and the RGB <-> YUV
4:2:0 conversion (BT.601, limited range) is done in numpy, so it does not depend on the FFmpeg build.
"""
from __future__ import annotations

import io
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import av
import cv2
import numpy as np

from keep.config import ConfigError

STEPS = ("blur", "downsample", "noise", "compress", "upsample")
PAPER_ORDER = ["blur", "downsample", "noise", "compress", "upsample"]   # Eq. 9
RELEASE_ORDER = ["blur", "noise", "downsample", "noise", "compress", "upsample"]  # release dataset code

_INTERP = {"area": cv2.INTER_AREA, "bilinear": cv2.INTER_LINEAR, "bicubic": cv2.INTER_CUBIC}


@dataclass
class DegradationConfig:
    """Ranges and switches of the degradation model; loaded strictly with :func:`keep.config.from_dict`.

    Defaults are the paper's training ranges (supplement A.4). Ranges are closed intervals ``[lo, hi]``
    (CRF drawn as an integer in ``[lo, hi]``, both ends included; the release's ``randint`` excludes ``hi``).
    """

    blur_sigma: Tuple[float, float] = (2.0, 10.0)    # Gaussian blur std in pixels of the GT frame
    # Kernel side (odd). 41 is the size used by the CodeFormer/BasicSR face recipes this code base
    # derives from; the KEEP release leaves it to an unreleased config. At σ = 10 it truncates at 2σ.
    blur_kernel_size: int = 41
    scale: int = 4                                   # ↓ and ↑ factor
    noise_sigma: Tuple[float, float] = (0.0, 10.0)   # δ, std on the 0–255 scale
    gray_noise_prob: float = 0.0                     # release: 0.5 (same noise on all channels)
    crf: Tuple[int, int] = (25, 45)
    codec: str = "libx264"                           # any H.264 encoder name PyAV knows ("h264" too)
    fps: int = 25                                    # frame rate given to the encoder's rate control
    downsample_interp: str = "bicubic"               # area | bilinear | bicubic (not specified by the paper)
    order: List[str] = field(default_factory=lambda: list(PAPER_ORDER))
    # ×4 back up at the end (bilinear, as the network's own input up-scale). False keeps the small
    # frames, e.g. for training, where the network up-scales 128 → 512 itself.
    upsample: bool = True

    def __post_init__(self) -> None:
        for name in ("blur_sigma", "noise_sigma", "crf"):
            lo_hi = tuple(getattr(self, name))
            if len(lo_hi) != 2 or lo_hi[0] > lo_hi[1] or lo_hi[0] < 0:
                raise ConfigError(f"degradation.{name}: expected [lo, hi] with 0 <= lo <= hi, got {list(lo_hi)}")
            setattr(self, name, lo_hi)
        if not 0 <= self.crf[0] <= self.crf[1] <= 51:
            raise ConfigError(f"degradation.crf: H.264 CRF must lie in [0, 51], got {list(self.crf)}")
        if self.blur_kernel_size < 1 or self.blur_kernel_size % 2 == 0:
            raise ConfigError(f"degradation.blur_kernel_size must be a positive odd number, got {self.blur_kernel_size}")
        if self.scale < 1:
            raise ConfigError(f"degradation.scale must be >= 1, got {self.scale}")
        if not 0.0 <= self.gray_noise_prob <= 1.0:
            raise ConfigError(f"degradation.gray_noise_prob must lie in [0, 1], got {self.gray_noise_prob}")
        if self.downsample_interp not in _INTERP:
            raise ConfigError(f"degradation.downsample_interp must be one of {sorted(_INTERP)}, "
                              f"got {self.downsample_interp!r}")
        unknown = [s for s in self.order if s not in STEPS]
        if unknown:
            raise ConfigError(f"degradation.order: unknown step(s) {unknown}; allowed: {list(STEPS)}")
        for once in ("downsample", "compress", "upsample"):
            if self.order.count(once) > 1:
                raise ConfigError(f"degradation.order: '{once}' may appear at most once, got {self.order}")
        if "downsample" not in self.order:
            raise ConfigError(f"degradation.order must contain 'downsample', got {self.order}")
        if "upsample" in self.order and self.order.index("upsample") < self.order.index("downsample"):
            raise ConfigError(f"degradation.order: 'upsample' must come after 'downsample', got {self.order}")


@dataclass
class DegradationParams:
    """One draw of the degradation for a whole clip.

    ``noise_sigma`` is δ on the 0–255 scale; ``seed`` (optional) is the seed of the generator that
    draws the per-frame noise, recorded so that a clip can be regenerated.
    """

    blur_sigma: float
    noise_sigma: float
    crf: int
    seed: Optional[int] = None

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


def sample_params(cfg: DegradationConfig, rng: np.random.Generator) -> DegradationParams:
    """Draw (σ, δ, CRF) uniformly from ``cfg``'s ranges: one draw per clip."""
    blur = float(rng.uniform(*cfg.blur_sigma))
    noise = float(rng.uniform(*cfg.noise_sigma))
    crf = int(rng.integers(cfg.crf[0], cfg.crf[1] + 1))
    return DegradationParams(blur_sigma=blur, noise_sigma=noise, crf=crf)


def gaussian_kernel_1d(sigma: float, size: int) -> np.ndarray:
    """Normalised 1-D Gaussian of std ``sigma`` sampled at integer offsets; (size,) float64.

    The 2-D isotropic kernel k_σ of Eq. 9 is its outer product with itself (separable)."""
    offsets = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    kernel = np.exp(-0.5 * (offsets / max(sigma, 1e-8)) ** 2)
    return kernel / kernel.sum()


def _blur(frames: np.ndarray, sigma: float, size: int) -> np.ndarray:
    kernel = gaussian_kernel_1d(sigma, size).astype(np.float32)
    # reflect-101 borders, as cv2.filter2D in the release
    return np.stack([cv2.sepFilter2D(f, -1, kernel, kernel, borderType=cv2.BORDER_REFLECT_101) for f in frames])


def _resize(frames: np.ndarray, size_hw: Tuple[int, int], interp: int) -> np.ndarray:
    h, w = size_hw
    return np.stack([cv2.resize(f, (w, h), interpolation=interp) for f in frames])


def _noise(frames: np.ndarray, sigma: float, gray_prob: float, rng: np.random.Generator) -> np.ndarray:
    out = np.empty_like(frames)
    for t, frame in enumerate(frames):  # fresh noise per frame, same δ for the clip
        if gray_prob > 0 and rng.uniform() < gray_prob:
            n = rng.standard_normal(frame.shape[:2], dtype=np.float32)[..., None]
        else:
            n = rng.standard_normal(frame.shape, dtype=np.float32)
        out[t] = np.clip(frame + sigma * n, 0.0, 255.0)
    return out


# ITU-R BT.601, limited range ("studio swing"), the matrix H.264 streams without colour tags assume.
_RGB2YCC = np.array([[65.481, 128.553, 24.966],
                     [-37.797, -74.203, 112.0],
                     [112.0, -93.786, -18.214]]) / 255.0
_YCC_OFFSET = np.array([16.0, 128.0, 128.0])


# Reproducibility switches (x264's output bits do not depend on them otherwise): one thread, since
# frame-threaded rate control depends on scheduling; no assembly, since on small frames (64x64 in our
# trials) x264's SIMD build gave different bytes from run to run for the same input (only with its
# MB-tree rate control on). The C path always gives the same bytes (which may differ slightly from a
# SIMD encode: float rounding in the MB-tree) and costs ~2x on the encode of 128x128 frames.
_X264_OPTIONS = {"threads": "1", "x264-params": "asm=0"}


def rgb_to_yuv420(frame: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (3H/2, W) uint8 planar yuv420p (Y plane, then U and V planes).

    Done here rather than by FFmpeg's swscale so that the colour matrix is explicit and the same on
    every FFmpeg build; chroma is the mean of each 2x2 block."""
    h, w, _ = frame.shape
    ycc = frame.astype(np.float64) @ _RGB2YCC.T + _YCC_OFFSET
    y = ycc[..., 0]
    chroma = ycc[..., 1:].reshape(h // 2, 2, w // 2, 2, 2).mean(axis=(1, 3))
    planes = [y.ravel(), chroma[..., 0].ravel(), chroma[..., 1].ravel()]
    return np.clip(np.rint(np.concatenate(planes)), 0, 255).astype(np.uint8).reshape(h * 3 // 2, w)


def yuv420_to_rgb(planar: np.ndarray) -> np.ndarray:
    """Inverse of :func:`rgb_to_yuv420`: (3H/2, W) uint8 -> (H, W, 3) uint8 RGB, chroma up-sampled bilinearly."""
    h, w = planar.shape[0] * 2 // 3, planar.shape[1]
    flat = planar.ravel()
    y = flat[:h * w].reshape(h, w).astype(np.float32)
    quarter = (h // 2) * (w // 2)
    u = flat[h * w:h * w + quarter].reshape(h // 2, w // 2).astype(np.float32)
    v = flat[h * w + quarter:].reshape(h // 2, w // 2).astype(np.float32)
    uv = np.stack([cv2.resize(c, (w, h), interpolation=cv2.INTER_LINEAR) for c in (u, v)], axis=-1)
    ycc = np.concatenate([y[..., None], uv], axis=-1).astype(np.float64) - _YCC_OFFSET
    return np.clip(np.rint(ycc @ np.linalg.inv(_RGB2YCC).T), 0, 255).astype(np.uint8)


def encode_decode(frames: np.ndarray, crf: int, codec: str = "libx264", fps: int = 25) -> np.ndarray:
    """Compress a clip as one H.264 video in memory (yuv420p, constant rate factor) and decode it back.

    frames: (T, H, W, 3) uint8 RGB, H and W even (4:2:0 chroma). Returns (T, H, W, 3) uint8 RGB.
    """
    t, h, w, _ = frames.shape
    if h % 2 or w % 2:
        raise ValueError(f"H.264 with yuv420p needs even frame sizes, got {h}x{w}; crop or resize the clip first")
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        try:
            stream = container.add_stream(codec, rate=fps, options=_X264_OPTIONS | {"crf": str(int(crf))})
        except (ValueError, av.error.FFmpegError) as err:
            raise ValueError(f"codec '{codec}' is not available in this PyAV/FFmpeg build ({err}); "
                             f"use 'libx264'") from err
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for i, frame in enumerate(frames):
            packet_frame = av.VideoFrame.from_ndarray(rgb_to_yuv420(frame), format="yuv420p")
            packet_frame.pts = i
            container.mux(stream.encode(packet_frame))
        container.mux(stream.encode(None))
    buffer.seek(0)
    with av.open(buffer, mode="r") as container:
        decoded = np.stack([yuv420_to_rgb(f.to_ndarray(format="yuv420p")) for f in container.decode(video=0)])
    if decoded.shape != frames.shape:
        raise RuntimeError(f"decoder returned {decoded.shape} for an encoded clip of {frames.shape}")
    return decoded


def degrade_clip(frames: np.ndarray, params: DegradationParams, cfg: DegradationConfig,
                 rng: Optional[np.random.Generator] = None) -> np.ndarray:
    """Apply the degradation to one clip.

    frames: (T, H, W, 3) uint8 RGB, H and W divisible by ``cfg.scale``.
    rng: draws the per-frame noise; defaults to ``np.random.default_rng(params.seed)``.
    Returns (T, H/s, W/s, 3) uint8 RGB, or (T, H, W, 3) when ``cfg.upsample`` and the order has 'upsample'.
    Intermediate values are float32 on the 0–255 scale; they are rounded to uint8 only where the
    encoder needs bytes and at the end.
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"degrade_clip expects (T, H, W, 3) uint8 RGB frames, got {frames.shape} {frames.dtype}")
    t, h, w, _ = frames.shape
    if h % cfg.scale or w % cfg.scale:
        raise ValueError(f"frame size {h}x{w} is not divisible by the scale {cfg.scale}")
    if rng is None:
        rng = np.random.default_rng(params.seed)
    x = frames.astype(np.float32)
    for step in cfg.order:
        if step == "blur":
            x = _blur(x, params.blur_sigma, cfg.blur_kernel_size)
        elif step == "downsample":
            x = _resize(x, (h // cfg.scale, w // cfg.scale), _INTERP[cfg.downsample_interp])
        elif step == "noise":
            x = _noise(x, params.noise_sigma, cfg.gray_noise_prob, rng)
        elif step == "compress":
            x = encode_decode(_to_uint8(x), params.crf, cfg.codec, cfg.fps).astype(np.float32)
        elif step == "upsample" and cfg.upsample:
            x = _resize(x, (h, w), cv2.INTER_LINEAR)
    return _to_uint8(x)


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)
