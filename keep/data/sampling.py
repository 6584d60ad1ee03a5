"""Temporal clip sampling: which frames of a source clip make one training sample.

The release draws a centre frame and a window of ``num_frame // 2`` frames on each side, which only
works for even lengths and loops forever when no interval fits (``spec/official-TRAINING.md`` §1.2).
Here a window is a start frame plus ``length`` frames spaced by ``interval``: any length works, and a
clip too short for every interval is an error that names the clip.
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import numpy as np


def fitting_intervals(num_frames: int, length: int, intervals: Sequence[int]) -> List[int]:
    """Intervals whose window ``(length - 1) * interval + 1`` frames long fits in ``num_frames``."""
    return [i for i in intervals if (length - 1) * i + 1 <= num_frames]


def sample_window(num_frames: int, length: int, intervals: Sequence[int], rng: np.random.Generator,
                  reverse_prob: float = 0.0, name: str = "clip", centre: Optional[int] = None) -> List[int]:
    """Frame indices of one sample: ``length`` indices, equally spaced, inside ``[0, num_frames)``.

    The interval is drawn uniformly among the configured ones that fit; the start uniformly among
    the valid starts, or, with ``centre`` (frame-uniform sampling, the release's
    ``vfhq_real_degradation2_dataset.py:256-288``), so that frame ``centre`` sits at position
    ``length // 2`` of the window (a uniformly drawn valid start when that window would leave the
    clip, as the release re-draws the centre); with probability ``reverse_prob`` the order is
    reversed (time reversal is a valid face video too, and doubles the motion directions seen).
    """
    if length < 1:
        raise ValueError(f"clip length must be >= 1, got {length}")
    fits = fitting_intervals(num_frames, length, intervals)
    if not fits:
        raise ValueError(f"{name} has {num_frames} frames: too short for {length} frames at any interval "
                         f"of {list(intervals)}; lower data.*.clip_length or remove the clip")
    interval = int(fits[int(rng.integers(len(fits)))])
    span = (length - 1) * interval + 1
    start = -1 if centre is None else centre - (length // 2) * interval
    if start < 0 or start + span > num_frames:
        start = int(rng.integers(num_frames - span + 1))
    window = list(range(start, start + span, interval))
    if reverse_prob > 0 and rng.uniform() < reverse_prob:
        window.reverse()
    return window
