"""A small labelled set of edited clips for shot-boundary detection, made from ../shared/videos.

Each clip is a list of (H, W, 3) uint8 frames at a small size with its true boundaries: hard cuts,
dissolves, fades through black, and clips with no boundary at all that try to fool a detector
(flash frames, a fast pan across two people, a zoom). A boundary is labelled with the frames a
detector may put it on: the first frame of the new shot for a hard cut, any frame of the transition
(or the one after it) for a dissolve or a fade.

``python tests/shot_clips.py`` prints precision and recall of :mod:`keep.face.shots` on the set
(the figures of docs/restore.md, "Edited footage").
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Sequence, Tuple

import cv2
import numpy as np

from shared_material import VIDEOS, require

SIZE = (144, 192)   # (width, height) of every labelled clip


@dataclass
class LabelledClip:
    name: str
    frames: List[np.ndarray]
    boundaries: List[Tuple[int, int]] = field(default_factory=list)   # acceptable [first, last] frames

    def add(self, frames: Sequence[np.ndarray]) -> int:
        """Append frames; returns the index of the first one."""
        start = len(self.frames)
        self.frames.extend(frames)
        return start


_CACHE: Dict[str, List[np.ndarray]] = {}


def source(name: str) -> List[np.ndarray]:
    """All frames of a shared video (decoded once per process)."""
    if name not in _CACHE:
        from keep.io import open_source
        with open_source(require(VIDEOS / f"{name}.mp4")) as src:
            _CACHE[name] = [f.image for f in src]
    return _CACHE[name]


def piece(name: str, start: int, count: int) -> List[np.ndarray]:
    return [cv2.resize(f, SIZE, interpolation=cv2.INTER_AREA) for f in source(name)[start:start + count]]


def _mix(a: np.ndarray, b: np.ndarray, weight: float) -> np.ndarray:
    return np.clip((1 - weight) * a.astype(np.float32) + weight * b.astype(np.float32) + 0.5, 0, 255).astype(np.uint8)


def hard_cuts() -> LabelledClip:
    clip = LabelledClip("hard cuts", [])
    parts = [("real_1", 0, 24), ("real_2", 0, 20), ("synthetic_1", 0, 18), ("synthetic_2", 0, 20),
             ("real_1", 120, 16), ("real_2", 150, 22), ("synthetic_1", 200, 14), ("real_1", 200, 20)]
    for k, (name, start, count) in enumerate(parts):
        first = clip.add(piece(name, start, count))
        if k:
            clip.boundaries.append((first, first))
    return clip


def dissolves() -> LabelledClip:
    """Dissolves of 10, 6 and 20 frames: the end of one piece mixed into the start of the next."""
    clip = LabelledClip("dissolves", [])
    plan = [(("real_1", 10, 30), 10), (("real_2", 40, 30), 6), (("synthetic_2", 30, 40), 20), (("real_1", 150, 30), 0)]
    previous = piece(*plan[0][0])
    for k, ((name, start, count), length) in enumerate(plan):
        frames = previous if k == 0 else piece(name, start, count)
        if k:
            frames = frames[plan[k - 1][1]:]   # the start already went into the dissolve
        if length:
            following = piece(*plan[k + 1][0])
            clip.add(frames[:-length])
            first = clip.add([_mix(a, b, (j + 1) / (length + 1))
                              for j, (a, b) in enumerate(zip(frames[-length:], following[:length]))])
            clip.boundaries.append((first, first + length))
        else:
            clip.add(frames)
    return clip


def fades() -> LabelledClip:
    """Fade out to black then in (real_2 -> synthetic_2), a fade out then a hard cut (synthetic_2 ->
    synthetic_1), a fade to white and back in (synthetic_1 -> real_2)."""
    clip = LabelledClip("fades", [])
    a, b, d = piece("real_2", 60, 28), piece("synthetic_2", 60, 28), piece("synthetic_1", 90, 24)
    black, white = np.zeros_like(a[0]), np.full_like(a[0], 255)
    clip.add(a[:16])
    first = clip.add([_mix(f, black, (k + 1) / 9) for k, f in enumerate(a[16:24])] + [black] * 3)
    last = clip.add([_mix(black, f, (k + 1) / 9) for k, f in enumerate(b[:8])])
    clip.boundaries.append((first, last + 8))
    clip.add(b[8:22])
    first = clip.add([_mix(f, black, (k + 1) / 7) for k, f in enumerate(b[22:28])])
    cut = clip.add(d[:16])
    clip.boundaries.append((first, cut))
    first = clip.add([_mix(f, white, (k + 1) / 9) for k, f in enumerate(d[16:24])] + [white] * 2)
    last = clip.add([_mix(white, f, (k + 1) / 9) for k, f in enumerate(a[:8])])
    clip.boundaries.append((first, last + 8))
    clip.add(a[8:20])
    return clip


def flashes() -> LabelledClip:
    """Camera flashes (one or two over-exposed or white frames) inside shots; one shot change."""
    clip = LabelledClip("flashes", [])
    frames = piece("real_1", 30, 48)
    for k in (12, 30, 31):
        frames[k] = _mix(frames[k], np.full_like(frames[k], 255), 0.7)
    frames[40] = np.full_like(frames[40], 255)
    clip.add(frames)
    other = piece("real_2", 100, 30)
    other[3] = np.clip(other[3].astype(np.int32) * 2, 0, 255).astype(np.uint8)   # a flash 3 frames after a cut
    other[20] = _mix(other[20], np.full_like(other[20], 255), 0.85)
    first = clip.add(other)
    clip.boundaries.append((first, first))
    return clip


def pan() -> LabelledClip:
    """A fast pan from one person to the other across a panorama (real_1 | real_2), no cut."""
    clip = LabelledClip("fast pan", [])
    left, right = source("real_1"), source("real_2")
    width = 300
    steps = 32
    for t in range(steps + 8):
        wide = np.concatenate([left[60 + t], right[60 + t]], axis=1)
        x = int(round(min(t, steps) * (wide.shape[1] - width) / steps))
        clip.add([cv2.resize(wide[:, x:x + width], SIZE, interpolation=cv2.INTER_AREA)])
    return clip


def zoom() -> LabelledClip:
    """A zoom in to a quarter of the frame and back out over 36 frames, no cut."""
    clip = LabelledClip("zoom", [])
    frames = source("real_2")
    for t in range(40):
        scale = 1.0 - 0.75 * (t if t < 20 else 40 - t) / 20
        image = frames[120 + t]
        h, w = image.shape[:2]
        ch, cw = int(h * scale), int(w * scale)
        y, x = (h - ch) // 3, (w - cw) // 2
        clip.add([cv2.resize(image[y:y + ch, x:x + cw], SIZE, interpolation=cv2.INTER_AREA)])
    return clip


def labelled_set() -> List[LabelledClip]:
    return [hard_cuts(), dissolves(), fades(), flashes(), pan(), zoom()]


def match(found: Sequence[int], truth: Sequence[Tuple[int, int]]) -> Tuple[int, int, int]:
    """(true positives, false positives, missed): each labelled boundary takes at most one cut inside
    its range."""
    free = list(found)
    hits = 0
    for first, last in truth:
        inside = [c for c in free if first <= c <= last]
        if inside:
            free.remove(inside[0])
            hits += 1
    return hits, len(free), len(truth) - hits


def evaluate(detect) -> Dict[str, Tuple[int, int, int]]:
    """{clip name: (tp, fp, missed)} for ``detect(frames) -> cut frames``."""
    return {clip.name: match(detect(clip.frames), clip.boundaries) for clip in labelled_set()}


def precision_recall(scores: Dict[str, Tuple[int, int, int]]) -> Tuple[float, float]:
    tp = sum(s[0] for s in scores.values())
    fp = sum(s[1] for s in scores.values())
    missed = sum(s[2] for s in scores.values())
    return tp / max(tp + fp, 1), tp / max(tp + missed, 1)


if __name__ == "__main__":
    from keep.face.shots import find_cuts
    scores = evaluate(find_cuts)
    for name, (tp, fp, missed) in scores.items():
        print(f"{name:12s} tp {tp} fp {fp} missed {missed}")
    print("precision %.2f recall %.2f" % precision_recall(scores))
