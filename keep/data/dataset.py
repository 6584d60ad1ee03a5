"""VFHQ-style training clips with the paper's video degradation (supplement Eq. 9).

Two ways to make a sample from a window of ``clip_length`` frames of one clip (``align``,
docs/training-data.md):

* ``before_degradation`` (the paper protocol's default, and the only one for pre-aligned crops):
  aligned GT crops (pre-aligned frames, or frames warped with per-frame landmarks, smoothed over time,
  onto the FFHQ template exactly as restoration aligns them: :mod:`keep.face.align`,
  :mod:`keep.face.smoothing`) -> one horizontal flip decision for the whole window (after alignment)
  -> the degradation of the whole clip at once (blur, ↓, noise, H.264 of the clip as one video, and
  optionally ↑).
* ``after_degradation`` (the release protocol's default when landmarks are given): the release's
  training loader (``VFHQRealDegradationDataset``, ``spec/official-TRAINING.md`` §1): the unaligned
  frames (bottom / right cropped to a multiple of 2 x scale) -> the flip (frames and landmarks
  mirrored, left/right points swapped; the release mirrors the frames only, which misplaces its
  crops) -> the degradation of the unaligned clip -> per frame, GT warped with its landmarks and LQ
  with landmarks / scale (:func:`keep.data.vfhq.align_pair`, the pair alignment of ``keep
  prepare-vfhq``), landmarks not smoothed.

Every random draw of a sample comes from one generator seeded by ``(seed, epoch, index)``; the
sampler hands ``(epoch, index)`` keys in, so a resumed run reproduces the data bit for bit.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from keep.data.clips import list_clips
from keep.config import ConfigError
from keep.data.degradation import DegradationConfig, degrade_clip, sample_params
from keep.data.procedural import ProceduralConfig, procedural_clips
from keep.data.sampling import sample_window
from keep.data.vfhq import align_pair, check_inside, crop_to_multiple, landmarks_for_frames, read_annotation
from keep.face.align import align_matrix, crop_matrix, warp_face
from keep.face.smoothing import StreamingGaussian
from keep.io import list_frames
from keep.registry import DATASETS

ALIGN_MODES = ("before_degradation", "after_degradation")
# Which order each degradation protocol implies when landmarks are given (docs/training-data.md).
ALIGN_BY_PROTOCOL = {"paper": "before_degradation", "release": "after_degradation"}
# Smoothing of the landmarks by default: restoration's (supp. Eq. 10) when aligning clean frames;
# none after degradation, as the release's loader (per-frame landmarks).
SIGMA_BY_ALIGN = {"before_degradation": 5.0, "after_degradation": 0.0}
# RetinaFace order (left eye, right eye, nose, left mouth, right mouth): a mirror swaps left and right.
MIRROR_ORDER = [1, 0, 2, 4, 3]


@dataclass
class ClipDatasetConfig:
    """Where the clips are and how a sample is drawn (``data.train`` / ``data.val`` in a stage config)."""

    root: str = ""                              # folder of clips (frame folders and/or videos)
    # clips made on the fly instead of read from `root` (moving face-like patterns of known
    # motion, keep.data.procedural): runs with no data at all (tiny configs, tests)
    procedural: Optional[ProceduralConfig] = None
    clips: List[str] = field(default_factory=list)   # only these clips (names); empty = all
    clip_length: int = 8                        # frames per sample (any length, odd included)
    intervals: List[int] = field(default_factory=lambda: [1])   # frame spacing drawn from this list
    gt_size: int = 512                          # side of the aligned GT crops
    # Frames must already be aligned gt_size crops; `resize: true` instead centre-crops each frame to
    # a square and resizes it to gt_size (smoke tests on unaligned videos; not for real training).
    resize: bool = False
    # Folder of per-clip landmark files <clip name>.txt (VFHQ's annotation format, keep.data.vfhq): one
    # line per frame with 10 numbers x1 y1 ... x5 y5 (eyes, nose tip, mouth corners; RetinaFace order),
    # optionally preceded by the frame name (then matched by name); header lines are skipped. Frames of
    # any size are then aligned to gt_size crops. "" = frames are crops.
    landmarks: str = ""
    # With landmarks: align the clean frames and degrade the crops ("before_degradation"), or degrade
    # the unaligned frames and align GT and LQ afterwards as the release does ("after_degradation").
    # None = the degradation protocol's (release: after, paper: before); without landmarks: before.
    align: Optional[str] = None
    # temporal Gaussian smoothing of landmarks (0 = off); None = 5 before degradation (restoration's),
    # 0 after degradation (the release's per-frame landmarks)
    landmark_sigma: Optional[float] = None
    hflip_prob: float = 0.5
    reverse_prob: float = 0.0
    repeat: int = 1                             # dataset length = number of clips (or frames) x repeat
    # "clip": every clip equally likely, a uniform window in it; "frame": every frame equally likely
    # (long clips weigh more), the window centred on it where it fits: the release's sampling, one
    # key per frame (vfhq_real_degradation2_dataset.py:62-69, 256-288). Counting frames is free for frame
    # folders; video clips are decoded (and kept, as when read) at start to count theirs
    sampling: str = "clip"
    seed: int = 0
    degradation: DegradationConfig = field(default_factory=lambda: DegradationConfig(upsample=False))

    def __post_init__(self) -> None:
        if bool(self.root) == (self.procedural is not None):
            raise ConfigError("data: give exactly one of root (a folder of clips) or procedural "
                              "(generated clips, no data needed)")
        if self.procedural is not None and (self.clips or self.landmarks or self.resize):
            raise ConfigError("data: clips, landmarks and resize apply to a root folder, not to procedural clips")
        if self.align is not None and self.align not in ALIGN_MODES:
            raise ConfigError(f"data.align must be one of {list(ALIGN_MODES)}, got {self.align!r}")
        if self.align == "after_degradation" and not self.landmarks:
            raise ConfigError("data.align: after_degradation needs landmarks (a folder of per-clip landmark files); "
                              "pre-aligned crops can only be degraded as they are")
        if self.align is None:
            self.align = ALIGN_BY_PROTOCOL[self.degradation.protocol] if self.landmarks else "before_degradation"
        if self.landmark_sigma is None:
            self.landmark_sigma = SIGMA_BY_ALIGN[self.align]
        if self.sampling not in ("clip", "frame"):
            raise ConfigError(f"data.sampling must be 'clip' or 'frame', got {self.sampling!r}")
        if self.landmark_sigma < 0:
            raise ConfigError(f"data.landmark_sigma must be >= 0, got {self.landmark_sigma}")


@DATASETS.register()
class VideoClipDataset(Dataset):
    """Returns ``{"gt": (T, 3, S, S), "lq": (T, 3, S/s, S/s) or (T, 3, S, S), "key": str}``,
    float32 RGB in [-1, 1] (``(v / 255 - 0.5) / 0.5``, the network's input convention)."""

    def __init__(self, cfg: ClipDatasetConfig):
        if cfg.gt_size % cfg.degradation.scale:
            raise ValueError(f"gt_size {cfg.gt_size} is not divisible by degradation.scale {cfg.degradation.scale}")
        if (cfg.gt_size // cfg.degradation.scale) % 2:
            raise ValueError(f"the LQ side gt_size / scale = {cfg.gt_size // cfg.degradation.scale} must be even "
                             f"for H.264 4:2:0; pick another gt_size")
        self.cfg = cfg
        self.clips = (procedural_clips(cfg.procedural, cfg.gt_size) if cfg.procedural is not None
                      else list_clips(Path(cfg.root), cfg.clips))
        # frame sampling: first dataset position of each clip (cumulative frame counts)
        self._starts = np.cumsum([0] + [len(c) for c in self.clips]) if cfg.sampling == "frame" else None
        self._landmarks: Dict[str, np.ndarray] = {}
        self._matrices: Dict[str, np.ndarray] = {}
        if cfg.landmarks and not Path(cfg.landmarks).is_dir():
            raise FileNotFoundError(f"landmarks folder {cfg.landmarks} does not exist")

    def __len__(self) -> int:
        units = int(self._starts[-1]) if self._starts is not None else len(self.clips)
        return units * self.cfg.repeat

    def _locate(self, index: int) -> Tuple[int, Optional[int]]:
        """Dataset position -> (clip number, centre frame or None)."""
        if self._starts is None:
            return index % len(self.clips), None
        position = index % int(self._starts[-1])
        clip = int(np.searchsorted(self._starts, position, side="right")) - 1
        return clip, position - int(self._starts[clip])

    def _clip_landmarks(self, clip) -> np.ndarray:
        """(N, 5, 2) landmarks of every frame of ``clip`` (in its frames' pixels), smoothed over time
        with ``landmark_sigma``; read once per clip."""
        if clip.name not in self._landmarks:
            path = Path(self.cfg.landmarks) / f"{clip.name}.txt"
            if not path.is_file():
                raise FileNotFoundError(f"no landmarks for clip {clip.name}: expected {path}")
            note = read_annotation(path)
            if len(note.landmarks) != len(clip):
                raise ValueError(f"{path}: {len(note.landmarks)} lines of landmarks for a clip of {len(clip)} frames; "
                                 f"need one line '[frame name] x1 y1 ... x5 y5' per frame")
            named = any(n is not None for n in note.names) and clip.path.is_dir()
            points = landmarks_for_frames(note, list_frames(clip.path), str(path)) if named else note.landmarks
            if self.cfg.landmark_sigma > 0:  # the restoration pipeline's smoothing (supp. Eq. 10)
                smoother = StreamingGaussian(self.cfg.landmark_sigma)
                smoothed = [v for p in points for v in smoother.push(p)] + smoother.finish()
                points = np.stack(smoothed)
            self._landmarks[clip.name] = np.asarray(points, np.float64)
        return self._landmarks[clip.name]

    def _align_matrices(self, clip) -> np.ndarray:
        """(N, 2, 3) frame -> gt_size crop matrices of every frame of ``clip`` from its landmarks."""
        if clip.name not in self._matrices:
            self._matrices[clip.name] = np.stack([crop_matrix(align_matrix(p), self.cfg.gt_size)
                                                  for p in self._clip_landmarks(clip)])
        return self._matrices[clip.name]

    def _crop(self, frames: np.ndarray, name: str, matrices: Optional[np.ndarray]) -> np.ndarray:
        size = self.cfg.gt_size
        _, h, w, _ = frames.shape
        if matrices is not None:
            return np.stack([warp_face(f, m, size) for f, m in zip(frames, matrices)])
        if not self.cfg.resize:
            if (h, w) != (size, size):
                raise ValueError(f"clip {name}: frames are {h}x{w}, expected aligned {size}x{size} crops; "
                                 f"align the clip first or set resize: true for a smoke run")
            return frames
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        square = frames[:, top:top + side, left:left + side]
        return np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA) for f in square])

    def __getitem__(self, key: Union[int, Tuple[int, int]]) -> Dict[str, object]:
        epoch, index = (0, key) if isinstance(key, int) else key
        rng = np.random.default_rng([self.cfg.seed, epoch, index])
        number, centre = self._locate(index)
        clip = self.clips[number]
        window = sample_window(len(clip), self.cfg.clip_length, self.cfg.intervals, rng,
                               self.cfg.reverse_prob, name=str(clip.path), centre=centre)
        if self.cfg.align == "after_degradation":
            gt, lq = self._degrade_then_align(clip, window, rng)
        else:
            matrices = self._align_matrices(clip)[window] if self.cfg.landmarks else None
            gt = self._crop(clip.read(window), clip.name, matrices)
            if rng.uniform() < self.cfg.hflip_prob:
                gt = np.ascontiguousarray(gt[:, :, ::-1])
            params = sample_params(self.cfg.degradation, rng)
            lq = degrade_clip(gt, params, self.cfg.degradation, rng)
        return {"gt": to_tensor(gt), "lq": to_tensor(lq), "key": f"{clip.name}/{window[0]:06d}"}

    def _degrade_then_align(self, clip, window: List[int], rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
        """The release's order: unaligned window -> flip -> degrade -> align GT and LQ per frame.
        The generator is drawn in the same order as the other path: window, flip, params, noise."""
        deg = self.cfg.degradation
        frames = np.stack([crop_to_multiple(f, 2 * deg.scale) for f in clip.read(window)])
        points = self._clip_landmarks(clip)[window]
        check_inside(points, frames.shape[2], frames.shape[1], f"clip {clip.name}")
        if rng.uniform() < self.cfg.hflip_prob:
            frames, points = mirror(frames, points)
        params = sample_params(deg, rng)
        lq = degrade_clip(frames, params, deg, rng)
        pairs = [align_pair(f, small, p, self.cfg.gt_size) for f, small, p in zip(frames, lq, points)]
        return np.stack([g for g, _ in pairs]), np.stack([s for _, s in pairs])


def mirror(frames: np.ndarray, landmarks: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Horizontal flip of (T, H, W, 3) frames and their (T, 5, 2) landmarks: x -> W - 1 - x (pixel
    centres at integers, OpenCV's convention) and the left/right points swapped, so that the flipped
    face is aligned upright onto the same template."""
    width = frames.shape[2]
    flipped = landmarks[:, MIRROR_ORDER].copy()
    flipped[..., 0] = width - 1 - flipped[..., 0]
    return np.ascontiguousarray(frames[:, :, ::-1]), flipped


def to_tensor(frames: np.ndarray) -> torch.Tensor:
    """(T, H, W, 3) uint8 RGB -> (T, 3, H, W) float32 in [-1, 1]."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()
    return x / 127.5 - 1.0


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """(..., 3, H, W) in [-1, 1] -> (..., H, W, 3) uint8 (clamped), for logging and metrics."""
    x = ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.movedim(-3, -1).cpu().numpy()
