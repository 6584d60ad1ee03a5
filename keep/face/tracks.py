"""The one face pipeline: detections -> tracks -> shot boundaries -> gap filling -> smoothing -> alignment.

Used by ``keep restore`` (and so the demo and the shards), ``keep live`` and ``keep prepare``. A
consumer feeds each frame's detections with :meth:`FaceTracks.push` and reacts to the events it
returns; it never looks at landmarks, gaps or shots itself:

* :class:`TrackStarted` (track, frame): a new face track; a fresh network state goes with it.
* :class:`FaceReady` (track, frame, landmarks, raw, matrix): the track's face in that frame, aligned
  (``matrix``: frame -> 512 crop, :func:`keep.face.align.align_matrix` of the smoothed landmarks).
* :class:`TrackEnded` (track, why): no more faces for it; free its state.

Rules that hold for every consumer:

* **A shot boundary ends every track** (``push(..., cut=True)``): no tracking, gap filling or
  smoothing across it, so a shot inside a video gives the faces it gives alone.
* **Look-ahead** (restore, prepare): gaps up to ``max_gap`` frames are filled by linear interpolation
  and landmarks smoothed by the centred Gaussian (:mod:`keep.face.smoothing`, the release's rule);
  the first faces of a shot seen within ``max_gap`` frames of its start are held back to it
  (np.interp's constant extrapolation in the release). **Causal** (live): the last landmarks are
  held up to ``max_hold`` frames and smoothed by a One Euro filter (:mod:`keep.face.causal_smoothing`).
* **A gap is bridged only while the face can still be there**: on a frame without a detection the
  region of the track's last box must still look like its face (:func:`keep.face.tracking.appearance`);
  when it does not (the camera panned away, someone passed in front) the track ends at its last
  detection, so nothing is pasted where no face was detected around it.
* **Minimum face size**: detections whose aligned crop would cover fewer than ``min_face`` source
  pixels (side of the square) are left alone (not tracked, not restored) and counted.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Deque, Dict, List, Optional

import numpy as np

from keep.face.align import FACE_SIZE, align_matrix
from keep.face.causal_smoothing import LandmarkHold, OneEuroFilter
from keep.face.detect import Detection
from keep.face.smoothing import GapFiller, StreamingGaussian
from keep.face.tracking import FaceTracker, appearance, looks_alike

# Smallest face restored by default: side (source pixels) of the square the aligned 512 crop covers.
# Measured (docs/restore.md, "Edited footage"): below 48 px crop side (a face box of about 24 px)
# dlib's five points move by more than 10 % of the eye distance when the frame is scaled, so the
# crop shakes; retinaface finds nothing that small at the release's input scale.
MIN_FACE = 48.0


@dataclass
class TrackStarted:
    track: int
    frame: int
    shot: int


@dataclass
class FaceReady:
    track: int
    frame: int
    landmarks: np.ndarray     # (5, 2) smoothed: what the crop uses
    raw: np.ndarray           # (5, 2) detected (gap-filled or held), unsmoothed
    matrix: np.ndarray        # (2, 3) frame -> 512 crop
    held: bool = False        # no detection of this face in this frame


@dataclass
class TrackEnded:
    track: int
    why: str                  # "shot" (boundary), "lost" (gap too long), "gone" (face left), "end"


@dataclass
class CausalSmoothing:
    """Live: One Euro filter parameters and the landmark hold (see keep/face/causal_smoothing.py)."""
    min_cutoff: float = 1.0
    beta: float = 0.02
    d_cutoff: float = 1.0
    max_hold: int = 10
    enabled: bool = True


def crop_side(matrix: np.ndarray, size: int = FACE_SIZE) -> float:
    """Side, in source pixels, of the square a ``size`` crop with this (2, 3) matrix covers."""
    return float(size / np.sqrt(abs(np.linalg.det(matrix[:, :2]))))


class _Track:
    def __init__(self, track_id: int, shot: int, start: int, max_gap: int, sigma: float,
                 causal: Optional[CausalSmoothing]):
        self.id, self.shot, self.start = track_id, shot, start
        self.next_frame = start                     # next frame whose face is due
        self.gaps = GapFiller(max_gap)
        self.smoother = StreamingGaussian(sigma)
        self.raw: Deque[np.ndarray] = deque()       # gap-filled landmarks waiting for their smoothed value
        self.hold = LandmarkHold(causal.max_hold) if causal is not None else None
        self.filter = (OneEuroFilter(causal.min_cutoff, causal.beta, causal.d_cutoff)
                       if causal is not None and causal.enabled else None)
        self.smoothed: Optional[np.ndarray] = None  # causal: the last output


class FaceTracks:
    """Streaming face tracks of one video. ``push(index, image, detections, cut)`` per frame, in order,
    then ``finish()``; both return events. ``pending_from`` says which frames may still get faces."""

    def __init__(self, all_faces: bool = False, max_gap: int = 20, sigma: float = 5.0,
                 min_face: float = MIN_FACE, causal: Optional[CausalSmoothing] = None, hold_back: bool = True):
        if max_gap < 0:
            raise ValueError(f"--max-gap must be >= 0 frames, got {max_gap}")
        if min_face < 0:
            raise ValueError(f"--min-face must be >= 0 pixels, got {min_face}")
        self.max_gap, self.sigma, self.min_face, self.causal = max_gap, sigma, min_face, causal
        self.hold_back = hold_back and causal is None
        self.tracker = FaceTracker(all_faces=all_faces)
        self.tracks: Dict[int, _Track] = {}
        self.shot = 0
        self.shot_start = 0
        self.shot_tracks = 0          # tracks started in the current shot
        self.seen = 0
        self.small_faces = 0          # detections under min_face (left untouched)
        self.tracks_started = 0
        self._person_lost_at: Optional[int] = None

    # ------------------------------------------------------------------ per frame
    def push(self, index: int, image: np.ndarray, detections: List[Detection], cut: bool = False,
             time: Optional[float] = None) -> list:
        events: list = []
        if cut and index > 0:
            events += self._end_all("shot")
            self.tracker.reset()
            self.shot += 1
            self.shot_start = index
            self.shot_tracks = 0
            self._person_lost_at = None
        self.seen = index + 1
        kept = []
        for det in detections:
            if self.min_face > 0 and crop_side(align_matrix(np.asarray(det.landmarks).reshape(5, 2))) < self.min_face:
                self.small_faces += 1
            else:
                kept.append(det)
        if self._person_lost_at is not None and index - self._person_lost_at > self.max_gap:
            self.tracker.remember(None)   # the followed person did not come back: take the centre face
            self._person_lost_at = None
        looks = [appearance(image, det.box) for det in kept]
        assigned = self.tracker.update(kept, image.shape[1], image.shape[0], looks)
        first_of_shot = self.shot_tracks == 0
        for tid, det in assigned.items():
            if tid not in self.tracks:
                events += self._start(tid, index, det, first_of_shot)
        for tid in sorted(self.tracks):
            track = self.tracks[tid]
            det = assigned.get(tid)
            if det is None and not looks_alike(self.tracker.look(tid), appearance(image, self.tracker.box(tid))):
                events += self._end(track, "gone")   # the face is no longer where it was: no bridging
                continue
            events += (self._push_causal(track, index, det, time) if self.causal is not None
                       else self._push_lookahead(track, index, det))
        return events

    def finish(self) -> list:
        """End of the video: pending gaps are held at the last landmarks (np.interp), every track ends."""
        return self._end_all("end")

    @property
    def pending_from(self) -> Optional[int]:
        """The first frame that may still receive a :class:`FaceReady` (None: no frame may)."""
        frames = [t.next_frame for t in self.tracks.values()]
        if self.hold_back and self.shot_tracks == 0 and self.seen - self.shot_start <= self.max_gap:
            frames.append(self.shot_start)   # a first face found later is held back to the shot's start
        return min(frames) if frames else None

    # ------------------------------------------------------------------ tracks
    def _start(self, tid: int, index: int, det: Detection, first_of_shot: bool) -> list:
        start = index
        if self.hold_back and first_of_shot and index - self.shot_start <= self.max_gap:
            start = self.shot_start
        track = self.tracks[tid] = _Track(tid, self.shot, start, self.max_gap, self.sigma, self.causal)
        self.shot_tracks += 1
        self.tracks_started += 1
        events: list = [TrackStarted(tid, start, self.shot)]
        landmarks = np.asarray(det.landmarks, np.float64).reshape(5, 2)
        for _ in range(start, index):   # frames before the first detection hold it
            events += self._smoothed(track, [landmarks])
        return events

    def _push_lookahead(self, track: _Track, index: int, det: Optional[Detection]) -> list:
        events: list = []
        values = track.gaps.push(index, None if det is None else np.asarray(det.landmarks, np.float64).reshape(5, 2))
        for _, landmarks in values:
            events += self._smoothed(track, [landmarks])
        if track.gaps.lost:
            events += self._end(track, "lost")
        return events

    def _smoothed(self, track: _Track, raw_values: List[np.ndarray]) -> list:
        events = []
        for raw in raw_values:
            track.raw.append(raw)
            for landmarks in track.smoother.push(raw):
                events.append(self._ready(track, landmarks, track.raw.popleft()))
        return events

    def _ready(self, track: _Track, landmarks: np.ndarray, raw: np.ndarray, held: bool = False) -> FaceReady:
        landmarks = np.asarray(landmarks, np.float64).reshape(5, 2)
        event = FaceReady(track.id, track.next_frame, landmarks, np.asarray(raw).reshape(5, 2),
                          align_matrix(landmarks), held)
        track.next_frame += 1
        return event

    def _push_causal(self, track: _Track, index: int, det: Optional[Detection], time: Optional[float]) -> list:
        raw = track.hold.push(None if det is None else np.asarray(det.landmarks, np.float64).reshape(5, 2))
        if raw is None:
            return self._end(track, "lost")
        if det is not None:
            if track.filter is None:
                track.smoothed = raw
            else:
                track.smoothed = track.filter(raw, time if time is not None else index)
        # held: the last smoothed landmarks; the filter sees no made-up sample
        track.next_frame = index
        return [self._ready(track, track.smoothed, raw, held=det is None)]

    def _end(self, track: _Track, why: str) -> list:
        events: list = []
        if self.causal is None:
            if why in ("shot", "end"):
                for _, landmarks in track.gaps.finish():   # a shot's end is a video's end
                    events += self._smoothed(track, [landmarks])
            for landmarks in track.smoother.finish():
                events.append(self._ready(track, landmarks, track.raw.popleft()))
        events.append(TrackEnded(track.id, why))
        if why in ("gone", "lost") and not self.tracker.all_faces:
            self.tracker.remember(self.tracker.look(track.id))   # single face: wait for this person
            self._person_lost_at = self.seen - 1
        self.tracker.drop(track.id)
        del self.tracks[track.id]
        return events

    def _end_all(self, why: str) -> list:
        events: list = []
        for tid in sorted(self.tracks):
            events += self._end(self.tracks[tid], why)
        return events
