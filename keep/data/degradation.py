"""The video degradation of the paper (supplement Eq. 9) and of the release's data code, as two named protocols.

Eq. 9:  x = {[(y ⊛ k_σ)↓ + n_δ]_codec}↑

* ``y``: a clean clip (T, H, W, 3) uint8 RGB; ``k_σ``: an isotropic Gaussian kernel; ``↓``/``↑``: ×4
  resize; ``n_δ``: Gaussian noise of std δ on the 0–255 scale; ``codec``: H.264 at a constant rate
  factor (CRF), the whole clip encoded as one video so that the artefacts depend on neighbouring frames.

Two protocols (``DegradationConfig.protocol``, docs/protocol.md):

* ``paper``: Eq. 9 as printed: blur → ↓ (bicubic) → noise (one δ per clip) → H.264 at 25 fps, RGB
  handed to the encoder as RGB, rounding to bytes.
* ``release``: the release's data code as it is (``VFHQRealDegradationDataset``,
  ``spec/official-TRAINING.md`` §1): blur → noise → ↓ (area / bilinear / bicubic drawn per clip) →
  noise again → H.264 with the stream opened at ``rate=1``; each noise step draws its own σ per frame
  and is gray with p 0.5; bytes for the encoder are truncated (``astype(uint8)``), the clip is processed
  as BGR arrays handed to the encoder as RGB (so the RGB→YUV matrix sees R and B swapped) and the
  CRF is drawn with an exclusive upper bound. x264's rate control depends on the frame duration: the same CRF at 25 fps
  compresses about as hard as CRF + 11 at 1 fps (issue 10), so the frame rate is part of the protocol.

A protocol fills every setting it governs (:data:`PROTOCOLS`); a setting given explicitly wins and
is reported by :meth:`DegradationConfig.deviations`. The resolved config (``to_dict``) records every
value, so a record regenerates its clip whatever the defaults become.

Streaming: :func:`degrade_frames` takes and yields one frame at a time; only the H.264 bit stream of
the clip (kilobytes per frame) is held, so a 900-frame 512-px clip needs no more memory than a short one.

Determinism: the same params, config and noise generator give the same bytes. x264 runs on one
thread without assembly (see ``_X264_OPTIONS``), the container is built in memory, and the RGB <-> YUV
4:2:0 conversion (BT.601, limited range) is done in numpy, so it does not depend on the FFmpeg build.
"""
from __future__ import annotations

import io
from dataclasses import asdict, dataclass
from typing import Any, Dict, Iterable, Iterator, List, Optional, Tuple

import av
import cv2
import numpy as np

from keep.config import ConfigError

STEPS = ("blur", "downsample", "noise", "compress", "upsample")
PAPER_ORDER = ["blur", "downsample", "noise", "compress", "upsample"]   # Eq. 9
RELEASE_ORDER = ["blur", "noise", "downsample", "noise", "compress", "upsample"]  # release dataset code

_INTERP = {"area": cv2.INTER_AREA, "bilinear": cv2.INTER_LINEAR, "bicubic": cv2.INTER_CUBIC}
RANDOM_INTERP = "random"   # one of _INTERP per clip, drawn with DegradationConfig.downsample_probs

# What each protocol fixes. The release's blur kernels (21 taps, isotropic p 0.7 / anisotropic p 0.3)
# and resize probabilities ([0.3, 0.3, 0.4]) are in its training options (options/train/stage2_KEEP.yml:29-35)
# and are set by configs/release/*; the defaults here (41-tap isotropic, uniform resize) are this
# project's, kept so that records made with them regenerate (docs/protocol.md).
PROTOCOLS: Dict[str, Dict[str, Any]] = {
    "paper": {"order": list(PAPER_ORDER), "fps": 25, "noise_per_frame": False, "gray_noise_prob": 0.0,
              "downsample_interp": "bicubic", "channels": "rgb", "quantize": "round",
              "crf_inclusive": True},
    "release": {"order": list(RELEASE_ORDER), "fps": 1, "noise_per_frame": True, "gray_noise_prob": 0.5,
                "downsample_interp": RANDOM_INTERP, "channels": "bgr", "quantize": "truncate",
                "crf_inclusive": False},
}
DEFAULT_PROTOCOL = "release"   # the released weights were trained on it (docs/protocol.md)


@dataclass
class DegradationConfig:
    """Ranges and switches of the degradation model; loaded strictly with :func:`keep.config.from_dict`.

    Ranges are closed intervals ``[lo, hi]`` (the CRF's upper end is excluded when ``crf_inclusive`` is
    false, as the release's ``randint``). Settings left at ``None`` come from ``protocol``.
    """

    protocol: str = DEFAULT_PROTOCOL                 # "release" | "paper" (see PROTOCOLS)
    blur_sigma: Tuple[float, float] = (2.0, 10.0)    # Gaussian blur std in pixels of the GT frame
    # Kernel side (odd). 41 is the size used by the CodeFormer/BasicSR face recipes this code base
    # derives from; the KEEP release leaves it to an unreleased config. At σ = 10 it truncates at 2σ.
    blur_kernel_size: int = 41
    # Probability that a clip's kernel is an anisotropic Gaussian (σx from blur_sigma, σy from
    # blur_sigma_y, rotated by θ ~ U(-π, π)) instead of the isotropic k_σ: the release's
    # kernel_list ['iso', 'aniso'] with kernel_prob [0.7, 0.3] (stage2_KEEP.yml:30-31, degradations.py:176-217)
    blur_aniso_prob: float = 0.0
    blur_sigma_y: Optional[Tuple[float, float]] = None   # None = blur_sigma
    scale: int = 4                                   # ↓ and ↑ factor
    noise_sigma: Tuple[float, float] = (0.0, 10.0)   # δ, std on the 0–255 scale
    crf: Tuple[int, int] = (25, 45)
    codec: str = "libx264"                           # any H.264 encoder name PyAV knows ("h264" too)
    # ×4 back up at the end (bilinear, as the network's own input up-scale). False keeps the small
    # frames, e.g. for training, where the network up-scales 128 → 512 itself.
    upsample: bool = True
    # --- governed by the protocol (None = the protocol's value) ---
    order: Optional[List[str]] = None
    fps: Optional[int] = None                        # frame rate given to x264's rate control
    noise_per_frame: Optional[bool] = None           # True: σ drawn per frame and noise step (release)
    gray_noise_prob: Optional[float] = None          # same noise on all channels with this probability
    downsample_interp: Optional[str] = None          # area | bilinear | bicubic | random
    downsample_probs: Tuple[float, float, float] = (1 / 3, 1 / 3, 1 / 3)   # area, bilinear, bicubic if random
    # Channel order the clip is processed in: "bgr" is the release's (its arrays are BGR throughout,
    # noise channels are drawn in that order, and the BGR bytes are handed to the encoder as 'rgb24', so
    # the RGB->YUV matrix sees R and B swapped); "rgb" hands RGB to the encoder as RGB.
    channels: Optional[str] = None
    quantize: Optional[str] = None                   # bytes for the encoder: "round" or "truncate" (release)
    crf_inclusive: Optional[bool] = None             # CRF upper end included (paper) or excluded (release)

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ConfigError(f"degradation.protocol must be one of {sorted(PROTOCOLS)}, got {self.protocol!r}")
        for key, value in PROTOCOLS[self.protocol].items():
            if getattr(self, key) is None:
                setattr(self, key, list(value) if isinstance(value, list) else value)
        self.order = list(self.order)
        if self.blur_sigma_y is None:
            self.blur_sigma_y = tuple(self.blur_sigma)
        if not 0.0 <= self.blur_aniso_prob <= 1.0:
            raise ConfigError(f"degradation.blur_aniso_prob must lie in [0, 1], got {self.blur_aniso_prob}")
        for name in ("blur_sigma", "blur_sigma_y", "noise_sigma", "crf"):
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
        if not 1 <= self.fps <= 1000:
            raise ConfigError(f"degradation.fps must lie in [1, 1000] (frames per second given to x264), got {self.fps}")
        if not 0.0 <= self.gray_noise_prob <= 1.0:
            raise ConfigError(f"degradation.gray_noise_prob must lie in [0, 1], got {self.gray_noise_prob}")
        if self.downsample_interp not in (*_INTERP, RANDOM_INTERP):
            raise ConfigError(f"degradation.downsample_interp must be one of {sorted(_INTERP) + [RANDOM_INTERP]}, "
                              f"got {self.downsample_interp!r}")
        probs = tuple(float(p) for p in self.downsample_probs)
        if len(probs) != 3 or min(probs) < 0 or abs(sum(probs) - 1.0) > 1e-6:
            raise ConfigError(f"degradation.downsample_probs: three non-negative weights (area, bilinear, bicubic) "
                              f"summing to 1, got {list(probs)}")
        self.downsample_probs = probs
        if self.channels not in ("rgb", "bgr"):
            raise ConfigError(f"degradation.channels must be 'rgb' or 'bgr', got {self.channels!r}")
        if self.quantize not in ("round", "truncate"):
            raise ConfigError(f"degradation.quantize must be 'round' or 'truncate', got {self.quantize!r}")
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

    def deviations(self) -> Dict[str, Tuple[Any, Any]]:
        """Settings that differ from the protocol's own: {name: (value here, protocol's value)}."""
        preset = PROTOCOLS[self.protocol]
        return {k: (getattr(self, k), v) for k, v in preset.items()
                if (list(getattr(self, k)) if isinstance(v, list) else getattr(self, k)) != v}


@dataclass
class DegradationParams:
    """One draw of the degradation for a whole clip.

    ``noise_sigma`` is δ on the 0–255 scale (None when the protocol draws it per frame);
    ``downsample_interp`` the interpolation drawn for the clip (None: the config's fixed one);
    ``seed`` (optional) seeds the generator of the per-frame noise, recorded so that a clip can be
    regenerated. ``blur_sigma_y`` and ``blur_theta`` (radians) are set for an anisotropic kernel
    (then ``blur_sigma`` is σx), None for the isotropic k_σ.
    """

    blur_sigma: float
    noise_sigma: Optional[float]
    crf: int
    seed: Optional[int] = None
    downsample_interp: Optional[str] = None
    blur_sigma_y: Optional[float] = None
    blur_theta: Optional[float] = None

    def to_dict(self) -> Dict[str, Any]:
        record = asdict(self)
        if self.blur_theta is None:   # isotropic: the record keeps its original keys
            record.pop("blur_sigma_y")
            record.pop("blur_theta")
        return record


def sample_params(cfg: DegradationConfig, rng: np.random.Generator) -> DegradationParams:
    """Draw the per-clip parameters from ``cfg``'s ranges, in the order blur σ, [δ], CRF, [interpolation].

    δ is drawn here only when it is one value per clip (paper); the release draws it per frame. With
    ``blur_aniso_prob`` > 0, last: the kernel type, then σy and θ for an anisotropic one (draws
    added at the end, so configs without anisotropic kernels draw exactly what they drew before)."""
    blur = float(rng.uniform(*cfg.blur_sigma))
    noise = None if cfg.noise_per_frame else float(rng.uniform(*cfg.noise_sigma))
    lo, hi = cfg.crf
    crf = int(rng.integers(lo, hi + 1)) if cfg.crf_inclusive or hi == lo else int(rng.integers(lo, hi))
    interp = None
    if cfg.downsample_interp == RANDOM_INTERP:
        interp = str(rng.choice(list(_INTERP), p=np.asarray(cfg.downsample_probs)))
    sigma_y = theta = None
    if cfg.blur_aniso_prob > 0 and rng.uniform() < cfg.blur_aniso_prob:
        sigma_y = float(rng.uniform(*cfg.blur_sigma_y))
        theta = float(rng.uniform(-np.pi, np.pi))
    return DegradationParams(blur_sigma=blur, noise_sigma=noise, crf=crf, downsample_interp=interp,
                             blur_sigma_y=sigma_y, blur_theta=theta)


def gaussian_kernel_1d(sigma: float, size: int) -> np.ndarray:
    """Normalised 1-D Gaussian of std ``sigma`` sampled at integer offsets; (size,) float64.

    The 2-D isotropic kernel k_σ of Eq. 9 is its outer product with itself (separable)."""
    offsets = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    kernel = np.exp(-0.5 * (offsets / max(sigma, 1e-8)) ** 2)
    return kernel / kernel.sum()


def anisotropic_gaussian_kernel(sigma_x: float, sigma_y: float, theta: float, size: int) -> np.ndarray:
    """Normalised 2-D Gaussian (size, size) float64 with covariance R(θ) diag(σx², σy²) R(θ)ᵀ, sampled at
    integer offsets (row = y, column = x): the release's ``bivariate_Gaussian`` (degradations.py:113-141)."""
    offsets = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    grid = np.stack(np.meshgrid(offsets, offsets), axis=-1)          # (size, size, 2): (x, y)
    rotation = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    covariance = rotation @ np.diag([sigma_x ** 2, sigma_y ** 2]) @ rotation.T
    kernel = np.exp(-0.5 * np.einsum("...i,ij,...j->...", grid, np.linalg.inv(covariance), grid))
    return kernel / kernel.sum()


def _noise(frame: np.ndarray, sigma: Optional[float], cfg: DegradationConfig, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise on one float frame (0–255). Draw order, as BasicSR's ``random_add_gaussian_noise``:
    σ (only when drawn per frame), the gray decision (only when gray noise is possible), the noise."""
    if sigma is None:
        sigma = rng.uniform(*cfg.noise_sigma)
    if cfg.gray_noise_prob > 0 and rng.uniform() < cfg.gray_noise_prob:
        n = rng.standard_normal(frame.shape[:2], dtype=np.float32)[..., None]
    else:
        n = rng.standard_normal(frame.shape, dtype=np.float32)
    return np.clip(frame + np.float32(sigma) * n, 0.0, 255.0)


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


def encode_decode_stream(frames: Iterable[np.ndarray], crf: int, codec: str = "libx264",
                         fps: int = 25) -> Iterator[np.ndarray]:
    """Compress a clip as one H.264 video in memory (yuv420p, constant rate factor) and decode it back,
    one frame at a time: frames go into the encoder as they come, and only the bit stream is held.

    frames: (H, W, 3) uint8 RGB, H and W even (4:2:0 chroma). Yields (H, W, 3) uint8 RGB.
    ``fps`` is the rate the stream is opened with (x264's rate control depends on it; the release
    uses 1).
    """
    buffer = io.BytesIO()
    count, shape = 0, None
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = None
        for frame in frames:
            if shape is None:
                shape = frame.shape
                h, w = shape[:2]
                if h % 2 or w % 2:
                    raise ValueError(f"H.264 with yuv420p needs even frame sizes, got {h}x{w}; "
                                     f"crop or resize the clip first")
                try:
                    stream = container.add_stream(codec, rate=fps, options=_X264_OPTIONS | {"crf": str(int(crf))})
                except (ValueError, av.error.FFmpegError) as err:
                    raise ValueError(f"codec '{codec}' is not available in this PyAV/FFmpeg build ({err}); "
                                     f"use 'libx264'") from err
                stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
            elif frame.shape != shape:
                raise ValueError(f"frame {count} is {frame.shape}, the clip's first frame {shape}")
            planar = rgb_to_yuv420(frame)
            packet_frame = av.VideoFrame.from_ndarray(planar, format="yuv420p")
            packet_frame.pts = count
            container.mux(stream.encode(packet_frame))
            count += 1
        if stream is not None:
            container.mux(stream.encode(None))
    if count == 0:
        return
    buffer.seek(0)
    decoded = 0
    with av.open(buffer, mode="r") as container:
        for f in container.decode(video=0):
            decoded += 1
            yield yuv420_to_rgb(f.to_ndarray(format="yuv420p"))
    if decoded != count:
        raise RuntimeError(f"decoder returned {decoded} frames for an encoded clip of {count}")


def encode_decode(frames: np.ndarray, crf: int, codec: str = "libx264", fps: int = 25) -> np.ndarray:
    """:func:`encode_decode_stream` on a whole (T, H, W, 3) uint8 clip; returns (T, H, W, 3) uint8."""
    return np.stack(list(encode_decode_stream(iter(frames), crf, codec, fps)))


def _quantize(x: np.ndarray, mode: str) -> np.ndarray:
    if mode == "truncate":   # the release: np.clip(x * 255, 0, 255).astype(np.uint8)
        return np.clip(x, 0, 255).astype(np.uint8)
    return _to_uint8(x)


def _noise_generators(cfg: DegradationConfig, rng: np.random.Generator) -> List[np.random.Generator]:
    """One generator per noise step. A single step uses ``rng`` itself (so paper-protocol records made
    before streaming regenerate bit for bit); several steps get independent children of ``rng``, so that
    streaming frame by frame draws the same numbers as the release's step-after-step loops."""
    steps = cfg.order.count("noise")
    return [rng] if steps <= 1 else list(rng.spawn(steps))


def degrade_frames(frames: Iterable[np.ndarray], params: DegradationParams, cfg: DegradationConfig,
                   rng: Optional[np.random.Generator] = None) -> Iterator[np.ndarray]:
    """Apply the degradation to a clip given frame by frame; yields the degraded frames in order.

    frames: (H, W, 3) uint8 RGB, H and W divisible by ``cfg.scale``; one (H, W) for the whole clip.
    rng: draws the per-frame noise; defaults to ``np.random.default_rng(params.seed)``.
    Yields (H/s, W/s, 3) uint8 RGB, or (H, W, 3) when ``cfg.upsample`` and the order has 'upsample'.
    Every step but the codec works on one frame (float32, 0–255); the codec consumes the whole clip
    before its first output (it needs neighbouring frames) but holds only its bit stream.
    """
    if rng is None:
        rng = np.random.default_rng(params.seed)
    noise_rngs = iter(_noise_generators(cfg, rng))
    kernel = gaussian_kernel_1d(params.blur_sigma, cfg.blur_kernel_size).astype(np.float32)
    kernel_2d = None
    if params.blur_theta is not None:
        kernel_2d = anisotropic_gaussian_kernel(params.blur_sigma, params.blur_sigma_y, params.blur_theta,
                                                cfg.blur_kernel_size).astype(np.float32)
    interp_name = params.downsample_interp or cfg.downsample_interp
    if interp_name not in _INTERP:
        raise ValueError(f"downsample interpolation {interp_name!r}: the config draws one per clip "
                         f"(downsample_interp: random) but the params carry none; draw them with sample_params")
    interp = _INTERP[interp_name]
    size = {}   # (h, w) of the first frame

    def checked(stream: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        for i, frame in enumerate(stream):
            frame = np.asarray(frame)
            if frame.ndim != 3 or frame.shape[-1] != 3 or frame.dtype != np.uint8:
                raise ValueError(f"degrade expects (H, W, 3) uint8 RGB frames, got {frame.shape} {frame.dtype}")
            if not size:
                h, w = frame.shape[:2]
                if h % cfg.scale or w % cfg.scale:
                    raise ValueError(f"frame size {h}x{w} is not divisible by the scale {cfg.scale}")
                size["hw"] = (h, w)
            elif frame.shape[:2] != size["hw"]:
                raise ValueError(f"frame {i} is {frame.shape[1]}x{frame.shape[0]}, the clip's first frame "
                                 f"{size['hw'][1]}x{size['hw'][0]}")
            yield frame

    def stage(stream: Iterable[np.ndarray], step: str) -> Iterator[np.ndarray]:
        if step == "noise":
            noise_rng = next(noise_rngs)   # bound now: steps are built in order
            return (_noise(x, params.noise_sigma, cfg, noise_rng) for x in stream)
        if step == "blur":
            # reflect-101 borders, as cv2.filter2D in the release (a Gaussian is point-symmetric, so
            # filter2D's correlation is the convolution)
            if kernel_2d is not None:
                return (cv2.filter2D(x, -1, kernel_2d, borderType=cv2.BORDER_REFLECT_101) for x in stream)
            return (cv2.sepFilter2D(x, -1, kernel, kernel, borderType=cv2.BORDER_REFLECT_101) for x in stream)
        if step == "downsample":
            return (cv2.resize(x, (x.shape[1] // cfg.scale, x.shape[0] // cfg.scale), interpolation=interp)
                    for x in stream)
        if step == "upsample":
            if not cfg.upsample:
                return iter(stream)
            return (cv2.resize(x, (size["hw"][1], size["hw"][0]), interpolation=cv2.INTER_LINEAR) for x in stream)
        if step == "compress":
            coded = encode_decode_stream((_quantize(x, cfg.quantize) for x in stream), params.crf, cfg.codec, cfg.fps)
            return (f.astype(np.float32) for f in coded)
        raise ValueError(f"unknown degradation step {step!r}")

    flip = cfg.channels == "bgr"   # the release's BGR arrays: reversed in, reversed back out
    stream: Iterator[np.ndarray] = ((f[..., ::-1] if flip else f).astype(np.float32) for f in checked(frames))
    for step in cfg.order:
        stream = stage(stream, step)
    for x in stream:
        yield np.ascontiguousarray(_to_uint8(x)[..., ::-1]) if flip else _to_uint8(x)


def degrade_clip(frames: np.ndarray, params: DegradationParams, cfg: DegradationConfig,
                 rng: Optional[np.random.Generator] = None) -> np.ndarray:
    """:func:`degrade_frames` on a whole clip.

    frames: (T, H, W, 3) uint8 RGB, H and W divisible by ``cfg.scale``.
    Returns (T, H/s, W/s, 3) uint8 RGB, or (T, H, W, 3) when ``cfg.upsample`` and the order has 'upsample'.
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"degrade_clip expects (T, H, W, 3) uint8 RGB frames, got {frames.shape} {frames.dtype}")
    if len(frames) == 0:
        raise ValueError("degrade_clip got a clip of 0 frames")
    return np.stack(list(degrade_frames(iter(frames), params, cfg, rng)))


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)
