"""Landmark smoothing and gap handling without look-ahead, for live restoration.

The file pipeline smooths with a centred Gaussian (sigma 5, radius 20: :mod:`keep.face.smoothing`)
and interpolates across gaps, both of which need future frames. Live, frame t's landmarks may only
use frames <= t:

* :class:`OneEuroFilter` (Casiez, Roussel and Vogel, CHI 2012): a first-order low-pass filter
  whose cutoff rises with the (low-passed) speed, so a still face is steady and a moving one does
  not lag. Timestamps come from the stream, so dropped frames enlarge the step instead of being
  mistaken for fast motion.
* :class:`LandmarkHold`: a frame without a detection keeps the track's last landmarks, for at most
  ``max_hold`` consecutive frames; then the track is lost (no interpolation: the next detection is
  not known yet).
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np


def _alpha(cutoff: float, dt: float) -> float:
    """Smoothing factor of an exponential low-pass with ``cutoff`` Hz at time step ``dt`` s
    (alpha = 1 / (1 + tau / dt), tau = 1 / (2 pi cutoff))."""
    tau = 1.0 / (2.0 * math.pi * cutoff)
    return 1.0 / (1.0 + tau / dt)


class OneEuroFilter:
    """One Euro filter on an array of coordinates (any shape), one-sided: output t uses inputs <= t.

    min_cutoff (Hz): cutoff at rest (lower = steadier, more lag at slow motion); beta (s/px): how
    fast the cutoff rises with speed (higher = less lag when moving); d_cutoff (Hz): the speed
    estimate's low-pass. Coordinates are in pixels, so beta is per pixel/s of landmark speed.
    ``__call__(value, t)`` with t in seconds (strictly increasing) returns the filtered value.
    """

    def __init__(self, min_cutoff: float = 1.0, beta: float = 0.02, d_cutoff: float = 1.0):
        for name, value in (("min_cutoff", min_cutoff), ("d_cutoff", d_cutoff)):
            if not value > 0:
                raise ValueError(f"One Euro {name} must be > 0 Hz, got {value}")
        if beta < 0:
            raise ValueError(f"One Euro beta must be >= 0, got {beta}")
        self.min_cutoff, self.beta, self.d_cutoff = min_cutoff, beta, d_cutoff
        self._x: Optional[np.ndarray] = None
        self._dx: Optional[np.ndarray] = None
        self._t: Optional[float] = None

    def __call__(self, value: np.ndarray, t: float) -> np.ndarray:
        value = np.asarray(value, dtype=np.float64)
        if self._x is None:
            self._x, self._dx, self._t = value.copy(), np.zeros_like(value), float(t)
            return value.copy()
        dt = float(t) - self._t
        if dt <= 0:
            raise ValueError(f"timestamps must increase (got {t} after {self._t})")
        speed = (value - self._x) / dt
        a_d = _alpha(self.d_cutoff, dt)
        self._dx = a_d * speed + (1 - a_d) * self._dx
        cutoff = self.min_cutoff + self.beta * np.abs(self._dx)
        a = 1.0 / (1.0 + 1.0 / (2.0 * math.pi * cutoff * dt))   # _alpha, element-wise
        self._x = a * value + (1 - a) * self._x
        self._t = float(t)
        return self._x.copy()


class LandmarkHold:
    """Per-track gap handling: ``push(landmarks_or_None)`` returns the landmarks to use this frame
    (the last known ones while detections are missing) or None once more than ``max_hold``
    consecutive frames had none (the track is then ``lost``)."""

    def __init__(self, max_hold: int):
        if max_hold < 0:
            raise ValueError(f"--max-hold must be >= 0 frames, got {max_hold}")
        self.max_hold = max_hold
        self.missing = 0
        self.lost = False
        self._last: Optional[np.ndarray] = None

    def push(self, landmarks: Optional[np.ndarray]) -> Optional[np.ndarray]:
        if self.lost:
            return None
        if landmarks is not None:
            self.missing = 0
            self._last = np.asarray(landmarks, dtype=np.float64)
            return self._last
        if self._last is None:
            raise RuntimeError("a track starts with a detection")
        self.missing += 1
        if self.missing > self.max_hold:
            self.lost = True
            return None
        return self._last
