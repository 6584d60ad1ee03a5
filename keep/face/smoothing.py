"""Temporal landmark processing, streamed: gap filling and Gaussian smoothing with a look-ahead.

The release fills frames without a detection by ``np.interp`` over the whole video and smooths
with ``scipy.ndimage.gaussian_filter1d(sigma=5)`` (mode 'reflect', truncate 4 -> radius 20; the
paper's supplementary Eq. 10 with a kernel normalised to sum 1). Both need the whole video. Here
the same numbers come out of two small state machines that see one frame at a time:

* :class:`GapFiller` holds the frames after the last detection until the next detection (linear
  interpolation, as ``np.interp``) or the end of the track (held at the last value, as
  ``np.interp``'s constant extrapolation). A gap longer than ``max_gap`` ends the track, which
  bounds how long frames wait.
* :class:`StreamingGaussian` emits frame ``t`` once frame ``t + radius`` is known, and at the end
  of the sequence reflects it (d c b a | a b c d) exactly as scipy's 'reflect' mode does.
"""
from __future__ import annotations

from collections import deque
from typing import Deque, List, Optional, Tuple

import numpy as np


def gaussian_kernel(sigma: float = 5.0, truncate: float = 4.0) -> np.ndarray:
    """(2r+1,) weights exp(-n^2 / (2 sigma^2)) normalised to sum 1, r = int(truncate*sigma + 0.5) (scipy).

    ``sigma == 0`` is no smoothing: the single weight 1 (radius 0, no look-ahead)."""
    if sigma < 0:
        raise ValueError(f"smoothing sigma must be >= 0 (0 = off), got {sigma}")
    if sigma == 0:
        return np.ones(1)
    radius = int(truncate * sigma + 0.5)
    n = np.arange(-radius, radius + 1, dtype=np.float64)
    weights = np.exp(-0.5 * n * n / (sigma * sigma))
    return weights / weights.sum()


def _reflect(index: int, length: int) -> int:
    """scipy 'reflect' (half-sample symmetric) index into a sequence of ``length``, any overshoot."""
    period = index % (2 * length)
    return period if period < length else 2 * length - 1 - period


class StreamingGaussian:
    """Gaussian smoothing of a vector sequence, streamed; equal to whole-sequence scipy output.

    ``push(v)`` takes the next value (any shape) and returns the smoothed values that became
    final, in order; ``finish()`` returns the rest. Memory: the last ``2 * radius + 1`` values.
    """

    def __init__(self, sigma: float = 5.0, truncate: float = 4.0):
        self.weights = gaussian_kernel(sigma, truncate)
        self.radius = (len(self.weights) - 1) // 2
        self._values: Deque[np.ndarray] = deque()
        self._first = 0      # sequence index of self._values[0]
        self._count = 0      # values pushed so far
        self._next = 0       # next index to emit

    def _smoothed(self, t: int, length: Optional[int]) -> np.ndarray:
        acc = 0.0
        for offset, weight in zip(range(-self.radius, self.radius + 1), self.weights):
            j = t + offset
            if j < 0 or (length is not None and j >= length):
                j = _reflect(j, length if length is not None else self._count)
            acc = acc + weight * self._values[j - self._first]
        return acc

    def push(self, value: np.ndarray) -> List[np.ndarray]:
        self._values.append(np.asarray(value, dtype=np.float64))
        self._count += 1
        out = []
        # Frame t is final when t + radius is known; negative indices reflect onto values we hold
        # (j < 0 -> -j - 1 <= radius - 1 < count).
        while self._next + self.radius < self._count:
            out.append(self._smoothed(self._next, None))
            self._next += 1
            # Keep the window t - radius .. for the next output.
            while self._first < self._next - self.radius:
                self._values.popleft()
                self._first += 1
        return out

    def finish(self) -> List[np.ndarray]:
        """The remaining outputs, reflecting at the end of the sequence."""
        out = []
        while self._next < self._count:
            out.append(self._smoothed(self._next, self._count))
            self._next += 1
        return out


class GapFiller:
    """Fill frames without a detection for one track; emits ``(frame, value)`` in frame order.

    ``push(frame, value_or_None)`` for consecutive frames; ``lost`` becomes True after more than
    ``max_gap`` frames without a value (those frames are then dropped, not emitted).
    ``finish()`` holds the pending frames at the last value (the end of the clip).
    """

    def __init__(self, max_gap: int):
        self.max_gap = max_gap
        self._last: Optional[Tuple[int, np.ndarray]] = None
        self._pending: List[int] = []
        self.lost = False

    def push(self, frame: int, value: Optional[np.ndarray]) -> List[Tuple[int, np.ndarray]]:
        if self.lost:
            raise RuntimeError("push after the track was lost")
        if value is None:
            if self._last is None:
                raise RuntimeError("a track starts with a detection")
            self._pending.append(frame)
            if len(self._pending) > self.max_gap:
                self.lost = True
                self._pending = []
            return []
        value = np.asarray(value, dtype=np.float64)
        out = []
        if self._pending:
            t0, v0 = self._last
            slope = (value - v0) / (frame - t0)
            out = [(t, slope * (t - t0) + v0) for t in self._pending]  # np.interp's formula
            self._pending = []
        out.append((frame, value))
        self._last = (frame, value)
        return out

    def finish(self) -> List[Tuple[int, np.ndarray]]:
        if self.lost or self._last is None:
            return []
        out = [(t, self._last[1].copy()) for t in self._pending]
        self._pending = []
        return out
