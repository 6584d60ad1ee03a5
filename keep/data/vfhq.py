"""VFHQ as distributed (unaligned clip frames + per-clip landmark annotation files), DicFace's
VFHQ-Test-50 set, and the release's alignment of a (GT, LQ) pair after degradation.

VFHQ layout read here (docs/training-data.md)::

    FRAMES/<clip>/00000000.png ...     unaligned frames of one clip (any size; VFHQ's crops of the video)
    ANNOTATIONS/<clip>.txt             one annotation file per clip

An annotation file holds header lines (``KEY: value`` / ``KEY value``, e.g. ``FPS: 25``,
``CROP: x0 y0 x1 y1``) and one line per frame: the frame's name (with or without its extension,
e.g. ``00000000.png``), then ten numbers ``x1 y1 ... x5 y5``: eye centres, nose tip, mouth corners
(RetinaFace order) in pixels of that frame. This is what the release's loaders read
(``VFHQRealDegradationDataset`` / ``VideoRecurrentTestDataset``: the lines that start with ``0``,
``<frame name> x1 y1 ... x5 y5``, the name checked against the frame file). Lines of any other shape
are header lines.

DicFace's VFHQ-Test-50 (ICCV 2025; Baidu / Hugging Face ``DicFace-test_dataset``)::

    ROOT/LR_Blind/<clip>/*.png         degraded inputs, unaligned (or <clip>.mp4)
    ROOT/TEST_DATA/<clip>/*.png        GT frames, unaligned
    ROOT/vfhq_test_landmarks/<clip>.txt  one line per frame: x1 y1 ... x5 y5 (no name), in pixels of the
                                       GT frames (DicFace's warp_images.py warps with them directly)

clip names like ``Clip+_HebIzK_LP4+P2+C1+F16589-16715`` (VFHQ's).

Pair alignment (:func:`align_pair`): the release's ``FaceAligner.align_pair_face``: the GT frame is
warped with the similarity that maps its landmarks onto the 512 FFHQ template (LMEDS), the LQ frame
with the similarity fitted to landmarks / s and template / s (s = GT size / LQ size); bilinear,
constant border (135, 133, 132) BGR; per-frame landmarks, not smoothed.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from keep.face.align import FACE_SIZE, FFHQ_TEMPLATE_512, align_matrix, crop_matrix, warp_face
from keep.io import VIDEO_SUFFIXES, list_frames
from keep.io.images import natural_key

DICFACE_LQ, DICFACE_GT, DICFACE_LANDMARKS = "LR_Blind", "TEST_DATA", "vfhq_test_landmarks"
_NUMBER = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


@dataclass
class Annotation:
    """A parsed annotation file: ``header`` (key -> value text), frame ``names`` (or None where a
    line had no name), ``landmarks`` (N, 5, 2) float64."""
    header: Dict[str, str]
    names: List[Optional[str]]
    landmarks: np.ndarray


def read_annotation(path: Path) -> Annotation:
    """Parse a VFHQ / DicFace per-clip landmark file (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"landmark annotation {path} does not exist")
    header: Dict[str, str] = {}
    names: List[Optional[str]] = []
    points: List[List[float]] = []
    for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        tokens = line.replace(",", " ").split()
        if not tokens:
            continue
        numeric = [bool(_NUMBER.match(t)) for t in tokens]
        if len(tokens) == 10 and all(numeric):
            names.append(None)
            points.append([float(t) for t in tokens])
        elif len(tokens) == 11 and all(numeric[1:]):
            names.append(tokens[0])
            points.append([float(t) for t in tokens[1:]])
        else:
            key, _, value = line.strip().partition(":" if ":" in line else " ")
            header[key.strip().upper()] = value.strip()
    if not points:
        raise ValueError(f"{path}: no landmark lines ('[frame name] x1 y1 ... x5 y5', ten numbers); "
                         f"is this a VFHQ annotation file?")
    return Annotation(header, names, np.asarray(points, np.float64).reshape(-1, 5, 2))


def write_annotation(path: Path, names: Sequence[str], landmarks: np.ndarray,
                     header: Optional[Dict[str, str]] = None) -> None:
    """Write landmarks in the format :func:`read_annotation` reads (VFHQ's: header, then name + 10 numbers)."""
    lines = [f"{k}: {v}" for k, v in (header or {}).items()]
    for name, lm in zip(names, np.asarray(landmarks, np.float64).reshape(-1, 10)):
        lines.append(" ".join([name] + [f"{v:.3f}" for v in lm]))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(path).with_name(f".{Path(path).name}.tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(path)


def landmarks_for_frames(annotation: Annotation, frames: Sequence[Path], where: str) -> np.ndarray:
    """(N, 5, 2) landmarks in the order of ``frames``: matched by frame name (with or without the
    extension) when the file names its frames, else by line order. Missing frames are an error."""
    if all(n is None for n in annotation.names):
        if len(annotation.names) != len(frames):
            raise ValueError(f"{where}: {len(annotation.names)} landmark lines for {len(frames)} frames; "
                             f"need one line per frame")
        return annotation.landmarks
    by_name: Dict[str, int] = {}
    for i, name in enumerate(annotation.names):
        if name is not None:
            by_name.setdefault(name, i)
            by_name.setdefault(Path(name).stem, i)
    order, missing = [], []
    for frame in frames:
        i = by_name.get(frame.name, by_name.get(frame.stem))
        (missing if i is None else order).append(frame.name if i is None else i)
    if missing:
        raise ValueError(f"{where}: no landmark line for frame(s) {missing[:3]}{' ...' if len(missing) > 3 else ''} "
                         f"({len(missing)} of {len(frames)}); lines must start with the frame's name")
    return annotation.landmarks[order]


def check_inside(landmarks: np.ndarray, width: int, height: int, where: str) -> None:
    """Landmarks must lie in the frame they annotate (a file in another coordinate system, e.g. of
    the full video frame, would silently give wrong crops)."""
    outside = ((landmarks[..., 0] < -0.5) | (landmarks[..., 0] > width - 0.5) |
               (landmarks[..., 1] < -0.5) | (landmarks[..., 1] > height - 0.5)).mean()
    if outside > 0.2:
        raise ValueError(f"{where}: {100 * outside:.0f}% of the landmarks lie outside the {width}x{height} frames; "
                         f"the file must give pixels of these frames (not of the source video)")


@dataclass
class VFHQClip:
    """One clip: ``frames`` (sorted files) with ``landmarks`` (N, 5, 2) in their pixels."""
    name: str
    frames: List[Path]
    landmarks: np.ndarray
    header: Dict[str, str] = field(default_factory=dict)


def _frame_files(folder: Path) -> List[Path]:
    files = list_frames(folder) if folder.is_dir() else []
    if not files:
        raise ValueError(f"clip folder {folder} holds no frames (PNG/JPEG)")
    return files


def list_vfhq_clips(frames_root: Path, annotations_root: Path, names: Sequence[str] = ()) -> List[VFHQClip]:
    """Clips of a VFHQ tree: every frame folder under ``frames_root`` with ``annotations_root/<clip>.txt``."""
    frames_root, annotations_root = Path(frames_root), Path(annotations_root)
    for root, what in ((frames_root, "frames"), (annotations_root, "annotations")):
        if not root.is_dir():
            raise FileNotFoundError(f"VFHQ {what} folder {root} does not exist")
    folders = sorted((p for p in frames_root.iterdir() if p.is_dir() and not p.name.startswith(".")), key=natural_key)
    if names:
        known = {p.name: p for p in folders}
        missing = [n for n in names if n not in known]
        if missing:
            raise FileNotFoundError(f"clip(s) {missing} not in {frames_root}")
        folders = [known[n] for n in names]
    if not folders:
        raise FileNotFoundError(f"no clip folders in {frames_root}: expected FRAMES/<clip>/00000000.png ...")
    clips = []
    for folder in folders:
        files = _frame_files(folder)
        note = annotations_root / f"{folder.name}.txt"
        if not note.is_file():
            raise FileNotFoundError(f"clip {folder.name}: no annotation {note}")
        annotation = read_annotation(note)
        clips.append(VFHQClip(folder.name, files, landmarks_for_frames(annotation, files, str(note)),
                              annotation.header))
    return clips


@dataclass
class DicFaceClip:
    """One clip of VFHQ-Test-50: degraded input, GT and landmarks (in GT pixels)."""
    name: str
    lq: Path                    # frame folder or video
    gt: List[Path]
    landmarks: np.ndarray


def list_dicface_clips(root: Path) -> List[DicFaceClip]:
    """The clips of DicFace's VFHQ-Test-50 tree (``LR_Blind/``, ``TEST_DATA/``, ``vfhq_test_landmarks/``)."""
    root = Path(root)
    folders = {k: root / k for k in (DICFACE_LQ, DICFACE_GT, DICFACE_LANDMARKS)}
    absent = [k for k, p in folders.items() if not p.is_dir()]
    if absent:
        raise FileNotFoundError(f"{root} is not a VFHQ-Test-50 tree: missing {', '.join(a + '/' for a in absent)} "
                                f"(expected {DICFACE_LQ}/, {DICFACE_GT}/ and {DICFACE_LANDMARKS}/)")
    clips = []
    for gt in sorted((p for p in folders[DICFACE_GT].iterdir() if p.is_dir()), key=natural_key):
        lq = folders[DICFACE_LQ] / gt.name
        if not lq.is_dir():
            videos = [lq.with_suffix(s) for s in VIDEO_SUFFIXES if lq.with_suffix(s).is_file()]
            if not videos:
                raise FileNotFoundError(f"clip {gt.name}: no degraded input {lq}/ (or {lq}.mp4)")
            lq = videos[0]
        files = _frame_files(gt)
        note = folders[DICFACE_LANDMARKS] / f"{gt.name}.txt"
        annotation = read_annotation(note)
        clips.append(DicFaceClip(gt.name, lq, files, landmarks_for_frames(annotation, files, str(note))))
    if not clips:
        raise FileNotFoundError(f"no clip folders in {folders[DICFACE_GT]}")
    return clips


def lq_matrix(landmarks: np.ndarray, scale: float) -> np.ndarray:
    """(2, 3) similarity for the LQ frame, as the release: fitted (LMEDS) to landmarks / s and the
    512 template / s. (Not the GT matrix rescaled: the release fits it again on the scaled points.)"""
    matrix, _ = cv2.estimateAffinePartial2D(np.asarray(landmarks, np.float64).reshape(5, 2) / scale,
                                            FFHQ_TEMPLATE_512 / scale, method=cv2.LMEDS)
    if matrix is None:
        raise ValueError("degenerate landmarks: no similarity transform fits them")
    return matrix


def crop_to_multiple(frame: np.ndarray, multiple: int) -> np.ndarray:
    """Crop the bottom / right edge to a multiple (the top-left origin, and so the landmarks, stay):
    unaligned frames made to fit ``scale`` and H.264's even 4:2:0 sizes before degradation."""
    h, w = frame.shape[:2]
    return frame[:h - h % multiple, :w - w % multiple]


def align_pair(gt: np.ndarray, lq: np.ndarray, landmarks: np.ndarray,
               size: int = FACE_SIZE) -> Tuple[np.ndarray, np.ndarray]:
    """The release's pair alignment of one frame: (GT (H, W, 3), LQ (H/s, W/s, 3)) uint8 RGB and the GT
    frame's (5, 2) landmarks -> (aligned GT size, aligned LQ size/s).

    The release writes the crops at the input frames' own sizes (its GT frames are 512x512); here the
    crops are always 512 and 512/s: for 512x512 input that is the same, otherwise it is the top-left
    512x512 (and 512/s) corner of the release's output, which is where the template puts the face.
    Another ``size`` (tiny training configs) resamples both crops as :func:`crop_matrix` does."""
    scale = gt.shape[0] / lq.shape[0]
    if abs(gt.shape[1] / lq.shape[1] - scale) > 1e-6:
        raise ValueError(f"GT {gt.shape[1]}x{gt.shape[0]} and LQ {lq.shape[1]}x{lq.shape[0]} differ in aspect")
    aligned_gt = warp_face(gt, crop_matrix(align_matrix(landmarks), size), size)
    # crop_matrix's factor is size / 512 = (size / s) / (512 / s): the same for the LQ crop
    aligned_lq = warp_face(lq, crop_matrix(lq_matrix(landmarks, scale), size), int(round(size / scale)))
    return aligned_gt, aligned_lq
