"""Associate detections across frames by box overlap and appearance, so each person keeps one track
(and one Kalman state)."""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import cv2

import numpy as np

from keep.face.detect import Detection


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two (4,) x1, y1, x2, y2 boxes."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(0.0, w) * max(0.0, h)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


# Bhattacharyya distance of two faces' colour histograms above which they are two people. Measured
# with dlib boxes on the shared clips: one person over 12 s <= 0.31; real_1 vs real_2 >= 0.83; the
# box moved off the face by 2/3 of its width 0.55 (docs/restore.md, "Edited footage").
SAME_PERSON = 0.5


def appearance(image: np.ndarray, box: np.ndarray) -> Optional[np.ndarray]:
    """A cheap appearance descriptor of the face in ``box``: its 16x8 hue-saturation histogram (sums to
    1), or None when the box lies (almost) outside the frame."""
    h, w = image.shape[:2]
    x1, y1 = max(0, int(round(box[0]))), max(0, int(round(box[1])))
    x2, y2 = min(w, int(round(box[2]))), min(h, int(round(box[3])))
    if x2 - x1 < 4 or y2 - y1 < 4:
        return None
    small = cv2.resize(np.ascontiguousarray(image[y1:y2, x1:x2]), (32, 32), interpolation=cv2.INTER_AREA)
    hist = cv2.calcHist([cv2.cvtColor(small, cv2.COLOR_RGB2HSV)], [0, 1], None, [16, 8], [0, 180, 0, 256]).flatten()
    return (hist / max(float(hist.sum()), 1.0)).astype(np.float32)


def looks_alike(a: Optional[np.ndarray], b: Optional[np.ndarray]) -> bool:
    """Same person by appearance (True when either is unknown: overlap alone decides)."""
    if a is None or b is None:
        return True
    return float(cv2.compareHist(a, b, cv2.HISTCMP_BHATTACHARYYA)) <= SAME_PERSON


class FaceTracker:
    """Greedy IoU tracker with an appearance check.

    A detection continues a track when its box overlaps the track's last one and (given appearances)
    it looks like the track's face, so a person passing in front does not take the track over.
    ``all_faces=False`` follows one face: the one nearest the frame centre when no track is active,
    then the same person until the track is lost, so the restored identity never jumps to another
    face that happens to be larger or more central for a frame (the release re-picks the largest face
    every frame). After a loss, :meth:`remember` makes it wait for that person (by appearance) rather
    than take whoever is nearest the centre. ``all_faces=True`` follows every face.
    """

    def __init__(self, all_faces: bool = False, iou_threshold: float = 0.3):
        self.all_faces = all_faces
        self.iou_threshold = iou_threshold
        self._boxes: Dict[int, np.ndarray] = {}   # active track id -> last detected box
        self._looks: Dict[int, Optional[np.ndarray]] = {}   # active track id -> last appearance
        self._person: Optional[np.ndarray] = None   # single-face mode: the lost person's appearance
        self._next_id = 0

    @property
    def active(self) -> List[int]:
        return sorted(self._boxes)

    def look(self, track_id: int) -> Optional[np.ndarray]:
        return self._looks.get(track_id)

    def box(self, track_id: int) -> np.ndarray:
        return self._boxes[track_id]

    def drop(self, track_id: int) -> None:
        """Forget a track (it was lost)."""
        self._boxes.pop(track_id, None)
        self._looks.pop(track_id, None)

    def remember(self, look: Optional[np.ndarray]) -> None:
        """Single-face mode: wait for this person (None: take the face nearest the centre again)."""
        self._person = look

    def reset(self) -> None:
        """A new shot: every track ends and nobody is waited for."""
        self._boxes.clear()
        self._looks.clear()
        self._person = None

    def update(self, detections: List[Detection], width: int, height: int,
               looks: Optional[Sequence[Optional[np.ndarray]]] = None) -> Dict[int, Detection]:
        """Assign this frame's detections (``looks``: their :func:`appearance`, optional); returns
        track id -> detection (new ids for new tracks)."""
        looks = list(looks) if looks is not None else [None] * len(detections)
        pairs: List[Tuple[float, int, int]] = sorted(
            ((box_iou(box, det.box), tid, k) for tid, box in self._boxes.items() for k, det in enumerate(detections)),
            reverse=True)
        assigned: Dict[int, Detection] = {}
        used = set()
        for iou, tid, k in pairs:
            if iou < self.iou_threshold:
                break
            if tid in assigned or k in used or not looks_alike(self._looks.get(tid), looks[k]):
                continue
            assigned[tid] = detections[k]
            used.add(k)
        free = [k for k in range(len(detections)) if k not in used]
        if self.all_faces:
            new = free
        elif not self._boxes and free:
            if self._person is not None:   # wait for the person who was followed
                alike = [k for k in free if looks[k] is not None and looks_alike(self._person, looks[k])]
                new = [min(alike, key=lambda k: cv2.compareHist(self._person, looks[k], cv2.HISTCMP_BHATTACHARYYA))] \
                    if alike else []
            else:
                centre = np.array([width / 2.0, height / 2.0])
                new = [min(free, key=lambda k: np.linalg.norm((detections[k].box[:2] + detections[k].box[2:]) / 2.0
                                                              - centre))]
        else:
            new = []
        for k in new:
            assigned[self._next_id] = detections[k]
            self._looks[self._next_id] = looks[k]
            self._next_id += 1
            self._person = None
        index = {id(det): k for k, det in enumerate(detections)}
        for tid, det in assigned.items():
            self._boxes[tid] = det.box
            look = looks[index[id(det)]]
            if look is not None:
                self._looks[tid] = look
        return assigned
