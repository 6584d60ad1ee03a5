"""``keep prepare``: in-the-wild videos (or VFHQ clips with landmark files) -> the training layout.

Per input video, two passes over its frames (nothing but landmarks is kept between them):

1. **detect and track** through restoration's own face pipeline, :class:`keep.face.tracks.FaceTracks`
   (every face): a detector (``dlib`` offline, ``retinaface``), tracking by overlap and appearance,
   shot boundaries (:mod:`keep.face.shots`: cuts, dissolves, fades; a boundary ends every track, so a
   segment never spans two shots), gaps of up to ``max_gap`` frames filled only while the face is
   still there, landmarks smoothed over time (σ 5), each frame aligned onto the FFHQ template. The
   events it gives are the segments: training crops are exactly the crops inference sees.
2. each frame of each segment is warped (:func:`~keep.face.align.warp_face`) into its folder.
3. **filters** per segment: too short (``min_frames``), too small (the square the 512 crop covers in
   the source frame, median over the segment, under ``min_face`` pixels: the crop would be an
   up-scale), too blurry (median variance of the Laplacian of the crop's centre at 256 px under
   ``min_sharpness``). Rejected segments are listed with the reason.

Layout written (the one :class:`keep.data.dataset.VideoClipDataset` reads with ``landmarks: ""``)::

    OUT/train/<video>_s<shot>_t<track>/00000000.png ...   aligned crops (size x size), one folder per
    OUT/val/<video>_s<shot>_t<track>/...                  face track and shot; the split is by video
    OUT/crop_landmarks/<segment>.txt                      detected (gap-filled, unsmoothed) landmarks in
                                                          crop pixels, one line per frame (VFHQ format)
    OUT/meta/<video>.json                                 settings, segments kept / rejected (and why)

Per video: every segment folder is written under a temporary name and renamed, the JSON last; a video
with its JSON is done (resumable) when its settings equal the requested ones, and refused otherwise.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import cv2
import numpy as np
from tqdm import tqdm

from keep.face.align import FACE_SIZE, align_matrix, crop_matrix, warp_face
from keep.face.detect import FaceDetector
from keep.face.shots import Shots
from keep.face.smoothing import StreamingGaussian
from keep.face.tracks import FaceReady, FaceTracks, TrackStarted, crop_side
from keep.io import open_source
from keep.io.outputs import FrameFolderWriter


@dataclass
class PrepareSettings:
    """What `keep prepare` does to each video (recorded; a resume must ask for the same)."""
    detector: str = "retinaface"
    size: int = FACE_SIZE            # side of the aligned crops (the training gt_size)
    sigma: float = 5.0               # temporal smoothing of the landmarks (restoration's, supp. Eq. 10)
    max_gap: int = 20                # frames without a detection bridged inside a track
    min_frames: int = 16             # shortest segment kept
    min_face: float = 128.0          # px: side of the square the crop covers in the source (median)
    min_sharpness: float = 10.0      # median variance of the Laplacian of the crop centre at 256 px
    shots: str = "auto"              # shot boundaries: "auto" (keep.face.shots) or "off"
    max_frames: Optional[int] = None
    val_fraction: float = 0.2        # videos whose name hashes below it go to val/

    def __post_init__(self):
        checks = [(self.size >= 16 and self.size % 8 == 0, f"size must be a multiple of 8 >= 16, got {self.size}"),
                  (self.sigma >= 0, f"sigma must be >= 0, got {self.sigma}"),
                  (self.max_gap >= 0, f"max_gap must be >= 0, got {self.max_gap}"),
                  (self.min_frames >= 1, f"min_frames must be >= 1, got {self.min_frames}"),
                  (self.shots in ("auto", "off"), f"shots must be auto or off, got {self.shots!r}"),
                  (0 <= self.val_fraction < 1, f"val_fraction must lie in [0, 1), got {self.val_fraction}"),
                  (self.max_frames is None or self.max_frames >= 1, f"max_frames must be >= 1, got {self.max_frames}")]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)


@dataclass
class Segment:
    """One face track within one shot: frames [start, start + len(landmarks)) of the video."""
    name: str
    shot: int
    track: int
    start: int
    landmarks: np.ndarray            # (n, 5, 2) gap-filled detections (frame pixels)
    smoothed: np.ndarray             # (n, 5, 2) after temporal smoothing: what the crops use
    reasons: List[str] = field(default_factory=list)
    face_side: float = 0.0
    sharpness: float = 0.0

    def covers(self, t: int) -> bool:
        return self.start <= t < self.start + len(self.smoothed)


def video_split(name: str, fraction: float, val: Sequence[str] = ()) -> str:
    """'val' or 'train' for a video: listed in ``val``, or its name's hash (stable, whatever else is
    in the input) under ``fraction``."""
    if val:
        return "val" if name in val else "train"
    position = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little") / 2 ** 64
    return "val" if position < fraction else "train"


def _smooth(points: np.ndarray, sigma: float) -> np.ndarray:
    if sigma <= 0:
        return points.copy()
    smoother = StreamingGaussian(sigma)
    out = [v for p in points for v in smoother.push(p)] + smoother.finish()
    return np.stack(out)


def sharpness(crop: np.ndarray) -> float:
    """Variance of the Laplacian of the central half (the face) of a 256 px aligned crop, gray."""
    gray = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY)
    return float(cv2.Laplacian(gray[64:192, 64:192].astype(np.float64), cv2.CV_64F).var())


def detect_segments(video: str, frames: Iterable[np.ndarray], detector: FaceDetector, settings: PrepareSettings,
                    progress: Optional[tqdm] = None) -> Tuple[List[Segment], int, int]:
    """Pass 1: every face track of every shot (keep.face.tracks, the restore pipeline's), as segments;
    the frame count and the number of shots."""
    tracks = FaceTracks(all_faces=True, max_gap=settings.max_gap, sigma=settings.sigma, min_face=0.0,
                        hold_back=False)
    shots = Shots(settings.shots)
    found: Dict[int, Tuple[int, List[FaceReady]]] = {}   # track id -> (shot, faces)
    count = 0

    def consume(events):
        for event in events:
            if isinstance(event, TrackStarted):
                found[event.track] = (event.shot, [])
            elif isinstance(event, FaceReady):
                found[event.track][1].append(event)
    for t, (image, cut) in enumerate(shots.annotate(frames, image_of=lambda f: f)):
        consume(tracks.push(t, image, detector.detect(image), cut=cut))
        count = t + 1
        if progress is not None:
            progress.update(1)
    consume(tracks.finish())
    segments, per_shot = [], {}
    for tid in sorted(found, key=lambda k: (found[k][0], found[k][1][0].frame if found[k][1] else 0, k)):
        shot, faces = found[tid]
        if not faces:
            continue
        k = per_shot[shot] = per_shot.get(shot, -1) + 1   # tracks numbered within their shot
        segments.append(Segment(f"{video}_s{shot:03d}_t{k:03d}", shot, k, faces[0].frame,
                                np.stack([f.raw for f in faces]), np.stack([f.landmarks for f in faces])))
    return segments, count, tracks.shot + 1


def write_segments(frames: Iterable[np.ndarray], segments: List[Segment], settings: PrepareSettings,
                   folder_of) -> List[Segment]:
    """Pass 2: warp every frame of every segment into its temporary folder, apply the filters and
    commit the kept ones (``folder_of(segment)`` is the destination); returns the kept segments."""
    from keep.data.vfhq import write_annotation
    open_ = {id(s): FrameFolderWriter(folder_of(s), "keep prepare") for s in segments}
    crop_points: Dict[int, List[np.ndarray]] = {id(s): [] for s in segments}
    scores: Dict[int, List[float]] = {id(s): [] for s in segments}
    sides: Dict[int, List[float]] = {id(s): [] for s in segments}
    try:
        for t, image in enumerate(frames):
            for s in segments:
                if not s.covers(t):
                    continue
                i = t - s.start
                face = align_matrix(s.smoothed[i])
                matrix = crop_matrix(face, settings.size)
                open_[id(s)].add(warp_face(image, matrix, settings.size))
                crop_points[id(s)].append(s.landmarks[i] @ matrix[:, :2].T + matrix[:, 2])
                # measured on a 256 crop of the source, whatever --size is, so the threshold means one thing
                scores[id(s)].append(sharpness(warp_face(image, crop_matrix(face, 256), 256)))
                sides[id(s)].append(crop_side(matrix, settings.size))
        kept = []
        for s in segments:
            folder = open_[id(s)]
            s.face_side = float(np.median(sides[id(s)])) if sides[id(s)] else 0.0
            s.sharpness = float(np.median(scores[id(s)])) if scores[id(s)] else 0.0
            if folder.count < settings.min_frames:
                s.reasons.append(f"{folder.count} frames < min_frames {settings.min_frames}")
            if s.face_side < settings.min_face:
                s.reasons.append(f"face covers {s.face_side:.0f} px < min_face {settings.min_face:g}")
            if s.sharpness < settings.min_sharpness:
                s.reasons.append(f"sharpness {s.sharpness:.1f} < min_sharpness {settings.min_sharpness:g}")
            if s.reasons:
                folder.abort()
                continue
            folder.commit()
            names = [f"{k:08d}.png" for k in range(folder.count)]
            write_annotation(folder.dest.parent.parent / "crop_landmarks" / f"{s.name}.txt", names,
                             np.stack(crop_points[id(s)]))
            kept.append(s)
        return kept
    except BaseException:
        for folder in open_.values():
            folder.abort()
        raise


def _frames(path: Path, max_frames: Optional[int]) -> Iterator[np.ndarray]:
    with open_source(path) as source:
        for frame in itertools.islice(source, max_frames):
            yield frame.image


def _record(video: str, source: str, split: str, settings: PrepareSettings, frames: int, shots: int,
            kept: List[Segment], segments: List[Segment]) -> Dict:
    def describe(s: Segment) -> Dict:
        return {"name": s.name, "shot": s.shot, "track": s.track, "start": s.start, "frames": len(s.smoothed),
                "face_side": round(s.face_side, 1), "sharpness": round(s.sharpness, 2), "reasons": s.reasons}
    return {"video": video, "source": source, "split": split, "settings": asdict(settings), "frames": frames,
            "shots": shots, "kept": [describe(s) for s in kept],
            "rejected": [describe(s) for s in segments if s.reasons]}


class Preparer:
    """Turns videos / frame folders (or VFHQ clips) into the training layout under ``output``."""

    def __init__(self, output: Path, settings: PrepareSettings, detector: Optional[FaceDetector] = None,
                 val: Sequence[str] = ()):
        self.output = Path(output)
        self.settings = settings
        self.detector = detector
        self.val = tuple(val)

    def _meta(self, video: str) -> Path:
        return self.output / "meta" / f"{video}.json"

    def wanted(self, video: str, source: str) -> Dict:
        return {"source": source, "split": video_split(video, self.settings.val_fraction, self.val),
                "settings": asdict(self.settings)}

    def done(self, video: str, source: str) -> Optional[Dict]:
        """The record of a finished video, None if not done; ValueError if made with other settings."""
        meta = self._meta(video)
        if not meta.is_file():
            return None
        try:
            record = json.loads(meta.read_text())
        except ValueError:
            return None
        wanted = self.wanted(video, source)
        diff = [k for k in wanted if record.get(k) != wanted[k]]
        if diff:
            detail = {k: (record.get(k), wanted[k]) for k in diff}
            raise ValueError(f"{self.output} already holds {video} prepared with other settings "
                             f"({'; '.join(f'{k}: {a!r} (asked {b!r})' for k, (a, b) in detail.items())}); "
                             f"give another -o, or delete {meta} and its segments to redo it")
        return record

    def _finish(self, video: str, source: str, frames: int, shots: int, segments: List[Segment],
                read) -> Dict:
        split = video_split(video, self.settings.val_fraction, self.val)
        kept = write_segments(read(), segments, self.settings, lambda s: self.output / split / s.name)
        record = _record(video, source, split, self.settings, frames, shots, kept, segments)
        meta = self._meta(video)
        meta.parent.mkdir(parents=True, exist_ok=True)
        tmp = meta.with_name(f".{meta.name}.tmp")
        tmp.write_text(json.dumps(record, indent=2))
        os.replace(tmp, meta)
        return record

    def prepare_video(self, path: Path, name: Optional[str] = None) -> Dict:
        """Detect, track, smooth, align and filter one video or frame folder."""
        if self.detector is None:
            raise ValueError("a detector is needed for in-the-wild videos")
        video = name or (Path(path).stem if Path(path).is_file() else Path(path).name)
        record = self.done(video, "video")
        if record is not None:
            return record
        with tqdm(desc=f"{video}: detect", unit="frame", leave=False) as bar:
            segments, frames, shots = detect_segments(video, _frames(path, self.settings.max_frames), self.detector,
                                                      self.settings, bar)
        if frames == 0:
            raise ValueError(f"{path}: no frames could be decoded")
        return self._finish(video, "video", frames, shots, segments,
                            lambda: _frames(path, self.settings.max_frames))

    def prepare_vfhq(self, clip) -> Dict:
        """A VFHQ clip (:class:`keep.data.vfhq.VFHQClip`): its annotated landmarks, one segment."""
        from keep.data.vfhq import check_inside
        from keep.io import read_image
        record = self.done(clip.name, "vfhq")
        if record is not None:
            return record
        files = clip.frames[:self.settings.max_frames]
        points = clip.landmarks[:len(files)]
        first = read_image(files[0])[0]
        check_inside(points, first.shape[1], first.shape[0], f"clip {clip.name}")
        segment = Segment(f"{clip.name}_s000_t000", 0, 0, 0, points, _smooth(points, self.settings.sigma))
        return self._finish(clip.name, "vfhq", len(files), 1, [segment],
                            lambda: (read_image(f)[0] for f in files))
