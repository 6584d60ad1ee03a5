"""Associate detections across frames by box overlap, so each person keeps one track (and one Kalman state)."""
from __future__ import annotations

from typing import Dict, List, Tuple

import numpy as np

from keep.face.detect import Detection


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two (4,) x1, y1, x2, y2 boxes."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(0.0, w) * max(0.0, h)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


class FaceTracker:
    """Greedy IoU tracker.

    ``all_faces=False`` follows one face: the one nearest the frame centre when no track is active,
    then the same person (by overlap) until the track is lost, so the restored identity never jumps
    to another face that happens to be larger or more central for a frame (the release re-picks the
    largest face every frame). ``all_faces=True`` follows every face.
    """

    def __init__(self, all_faces: bool = False, iou_threshold: float = 0.3):
        self.all_faces = all_faces
        self.iou_threshold = iou_threshold
        self._boxes: Dict[int, np.ndarray] = {}   # active track id -> last detected box
        self._next_id = 0

    @property
    def active(self) -> List[int]:
        return sorted(self._boxes)

    def drop(self, track_id: int) -> None:
        """Forget a track (it was lost)."""
        self._boxes.pop(track_id, None)

    def update(self, detections: List[Detection], width: int, height: int) -> Dict[int, Detection]:
        """Assign this frame's detections; returns track id -> detection (new ids for new tracks)."""
        pairs: List[Tuple[float, int, int]] = sorted(
            ((box_iou(box, det.box), tid, k) for tid, box in self._boxes.items() for k, det in enumerate(detections)),
            reverse=True)
        assigned: Dict[int, Detection] = {}
        used = set()
        for iou, tid, k in pairs:
            if iou < self.iou_threshold:
                break
            if tid in assigned or k in used:
                continue
            assigned[tid] = detections[k]
            used.add(k)
        free = [det for k, det in enumerate(detections) if k not in used]
        if self.all_faces:
            new = free
        elif not self._boxes and free:
            centre = np.array([width / 2.0, height / 2.0])
            new = [min(free, key=lambda d: np.linalg.norm((d.box[:2] + d.box[2:]) / 2.0 - centre))]
        else:
            new = []
        for det in new:
            assigned[self._next_id] = det
            self._next_id += 1
        for tid, det in assigned.items():
            self._boxes[tid] = det.box
        return assigned
