"""Procedural training clips: textured, face-like patterns moving with a known motion.

Why: a fresh clone has no dataset, and the tiny configs and tests must still train every stage
on clips whose frames are related by real motion (so that the flow, the Kalman prediction of
Eq. 12 and the temporal loss of Eq. 7 are exercised). Each clip is one random "face" (skin-toned
textured ellipse, eyes with iris and brows, nose, mouth, textured background) rendered on a
canvas twice the crop size; frame ``t`` is the crop seen through a smooth rigid motion
(sinusoidal translation of a few pixels plus a small rotation), so faces stay roughly aligned as in
aligned training crops, and the motion between any two frames is known exactly (:meth:`true_flow`).

Everything is a function of ``(seed, clip index)``: the same config gives the same bytes.
Selected in a config by ``data.train.procedural: {...}`` instead of ``root`` (see docs/training.md).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence

import cv2
import numpy as np

from keep.config import ConfigError


@dataclass
class ProceduralConfig:
    """How many procedural clips and how they move (``data.*.procedural`` in a stage config)."""

    num_clips: int = 8
    num_frames: int = 24
    seed: int = 0                  # clip c is drawn from (seed, c): use another seed for held-out clips
    max_shift: float = 0.06        # peak translation, as a fraction of the crop side
    max_rotation: float = 3.0      # peak rotation in degrees
    period: List[int] = (16, 40)   # frames per motion cycle, drawn per clip and axis in [lo, hi]

    def __post_init__(self) -> None:
        self.period = list(self.period)
        if self.num_clips < 1 or self.num_frames < 1:
            raise ConfigError(f"procedural: num_clips and num_frames must be >= 1, got "
                              f"{self.num_clips} and {self.num_frames}")
        if not 0.0 <= self.max_shift <= 0.25:
            raise ConfigError(f"procedural.max_shift must lie in [0, 0.25] (fraction of the side), got {self.max_shift}")
        if len(self.period) != 2 or not 2 <= self.period[0] <= self.period[1]:
            raise ConfigError(f"procedural.period: expected [lo, hi] with 2 <= lo <= hi, got {self.period}")


def _smooth_noise(rng: np.random.Generator, shape: Sequence[int], cells: int, channels: int = 1) -> np.ndarray:
    """Band-limited noise in [0, 1]: ``cells`` x ``cells`` random values up-sampled bicubically."""
    small = rng.uniform(0, 1, (cells, cells, channels)).astype(np.float32)
    big = cv2.resize(small, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)
    return np.clip(big.reshape(shape[0], shape[1], channels), 0, 1)


def _draw_face(rng: np.random.Generator, side: int) -> np.ndarray:
    """A (2*side, 2*side, 3) float32 RGB canvas (0-255) with one face centred in it."""
    n = 2 * side
    canvas = 60 + 140 * _smooth_noise(rng, (n, n), 6, 3)                      # background
    canvas += 25 * (_smooth_noise(rng, (n, n), n // 6, 1) - 0.5)               # its fine texture
    centre = np.array([n / 2, n / 2])
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32)

    def ellipse(cx, cy, ax, ay):
        return ((xx - cx) / ax) ** 2 + ((yy - cy) / ay) ** 2 <= 1.0

    skin = np.array([rng.uniform(150, 235), rng.uniform(105, 180), rng.uniform(80, 150)], np.float32)
    face = ellipse(centre[0], centre[1] + 0.02 * side, rng.uniform(0.30, 0.36) * side, rng.uniform(0.40, 0.46) * side)
    shading = 0.85 + 0.3 * _smooth_noise(rng, (n, n), 4, 1)                    # soft light
    pores = 18 * (_smooth_noise(rng, (n, n), n // 4, 1) - 0.5)                 # skin texture
    canvas[face] = (skin * shading + pores)[face]
    eye_dx, eye_y = rng.uniform(0.12, 0.16) * side, centre[1] - rng.uniform(0.06, 0.10) * side
    iris = np.array([rng.uniform(20, 120), rng.uniform(20, 90), rng.uniform(10, 70)], np.float32)
    for sign in (-1, 1):
        cx = centre[0] + sign * eye_dx
        canvas[ellipse(cx, eye_y - 0.09 * side, 0.08 * side, 0.018 * side)] = skin * 0.35        # brow
        canvas[ellipse(cx, eye_y, 0.065 * side, 0.03 * side)] = (235, 235, 230)                 # sclera
        canvas[ellipse(cx + rng.uniform(-0.01, 0.01) * side, eye_y, 0.026 * side, 0.026 * side)] = iris
        canvas[ellipse(cx, eye_y, 0.01 * side, 0.01 * side)] = (15, 15, 15)                      # pupil
    nose = ellipse(centre[0], centre[1] + 0.08 * side, 0.035 * side, 0.09 * side)
    canvas[nose] = canvas[nose] * 0.85
    canvas[ellipse(centre[0], centre[1] + 0.24 * side, rng.uniform(0.09, 0.13) * side, 0.03 * side)] = (
        rng.uniform(120, 190), rng.uniform(40, 80), rng.uniform(50, 90))                         # mouth
    return cv2.GaussianBlur(np.clip(canvas, 0, 255), (0, 0), 0.6)


class ProceduralClip:
    """One procedural clip with the :class:`keep.data.clips.ClipSource` interface (name, len, read)."""

    def __init__(self, cfg: ProceduralConfig, index: int, size: int):
        self.cfg, self.index, self.size = cfg, index, size
        self.name = f"procedural_{cfg.seed}_{index:04d}"
        self.path = self.name
        rng = np.random.default_rng([cfg.seed, index, 7])
        self._canvas = _draw_face(rng, size)
        lo, hi = cfg.period
        self._periods = rng.uniform(lo, hi, 3)
        self._phases = rng.uniform(0, 2 * np.pi, 3)
        self._amplitudes = np.array([rng.uniform(0.5, 1.0) * cfg.max_shift * size,
                                     rng.uniform(0.5, 1.0) * cfg.max_shift * size,
                                     rng.uniform(0.0, 1.0) * cfg.max_rotation])
        self._frames: Optional[np.ndarray] = None

    def __len__(self) -> int:
        return self.cfg.num_frames

    def matrix(self, t: int) -> np.ndarray:
        """(2, 3) affine map from canvas to frame ``t`` pixels (crop centre on the face, moved)."""
        dx, dy, angle = self._amplitudes * np.sin(2 * np.pi * t / self._periods + self._phases)
        n = 2 * self.size
        m = cv2.getRotationMatrix2D((n / 2, n / 2), float(angle), 1.0)
        m[:, 2] += (dx - self.size / 2, dy - self.size / 2)
        return m

    def true_flow(self, t: int, s: int) -> np.ndarray:
        """(H, W, 2) exact flow from frame ``t`` to frame ``s``: ``frame_t(p) = frame_s(p + flow(p))``."""
        to_canvas = cv2.invertAffineTransform(self.matrix(t))
        a = self.matrix(s)[:, :2] @ to_canvas[:, :2]
        b = self.matrix(s)[:, :2] @ to_canvas[:, 2] + self.matrix(s)[:, 2]
        yy, xx = np.mgrid[0:self.size, 0:self.size].astype(np.float64)
        px = a[0, 0] * xx + a[0, 1] * yy + b[0]
        py = a[1, 0] * xx + a[1, 1] * yy + b[1]
        return np.stack([px - xx, py - yy], -1).astype(np.float32)

    def _render(self) -> np.ndarray:
        if self._frames is None:
            self._frames = np.stack([
                cv2.warpAffine(self._canvas, self.matrix(t), (self.size, self.size), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REFLECT) for t in range(len(self))
            ]).round().astype(np.uint8)
        return self._frames

    def read(self, indices: Sequence[int]) -> np.ndarray:
        """Frames at ``indices`` as (len(indices), size, size, 3) uint8 RGB."""
        return self._render()[list(indices)]


def procedural_clips(cfg: ProceduralConfig, size: int) -> List[ProceduralClip]:
    """The ``cfg.num_clips`` clips of a procedural source, ``size`` x ``size`` frames."""
    return [ProceduralClip(cfg, i, size) for i in range(cfg.num_clips)]
