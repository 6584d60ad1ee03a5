"""VFHQ-style training clips with the paper's video degradation (supplement Eq. 9).

One sample: a window of ``clip_length`` frames of one clip -> aligned GT crops (pre-aligned frames,
or frames warped with per-frame landmarks, smoothed over time, onto the FFHQ template exactly as
restoration aligns them: :mod:`keep.face.align`, :mod:`keep.face.smoothing`) -> one horizontal
flip decision for the whole window (after alignment, so crops and landmarks agree; the release flips
before aligning, ``spec/official-TRAINING.md`` §1) -> the degradation of the whole clip at once
(blur, ↓, noise, H.264 of the clip as one video, and optionally ↑).

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
from keep.face.align import align_matrix, crop_matrix, warp_face
from keep.face.smoothing import StreamingGaussian
from keep.registry import DATASETS


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
    # Folder of per-clip landmark files <clip name>.txt: one line per frame, in frame order, with 10
    # numbers x1 y1 ... x5 y5 (eyes, nose tip, mouth corners; RetinaFace order), optionally preceded
    # by the frame name. Frames of any size are then aligned to gt_size crops. "" = frames are crops.
    landmarks: str = ""
    landmark_sigma: float = 5.0                 # temporal Gaussian smoothing of landmarks (0 = off)
    hflip_prob: float = 0.5
    reverse_prob: float = 0.0
    repeat: int = 1                             # dataset length = number of clips x repeat
    seed: int = 0
    degradation: DegradationConfig = field(default_factory=lambda: DegradationConfig(upsample=False))

    def __post_init__(self) -> None:
        if bool(self.root) == (self.procedural is not None):
            raise ConfigError("data: give exactly one of root (a folder of clips) or procedural "
                              "(generated clips, no data needed)")
        if self.procedural is not None and (self.clips or self.landmarks or self.resize):
            raise ConfigError("data: clips, landmarks and resize apply to a root folder, not to procedural clips")


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
        self._matrices: Dict[str, np.ndarray] = {}
        if cfg.landmarks and not Path(cfg.landmarks).is_dir():
            raise FileNotFoundError(f"landmarks folder {cfg.landmarks} does not exist")

    def __len__(self) -> int:
        return len(self.clips) * self.cfg.repeat

    def _align_matrices(self, clip) -> np.ndarray:
        """(N, 2, 3) frame -> gt_size crop matrices of every frame of ``clip`` from its smoothed landmarks."""
        if clip.name not in self._matrices:
            path = Path(self.cfg.landmarks) / f"{clip.name}.txt"
            if not path.is_file():
                raise FileNotFoundError(f"no landmarks for clip {clip.name}: expected {path}")
            rows = [line.split() for line in path.read_text().splitlines() if line.strip()]
            try:
                points = np.array([[float(v) for v in row[-10:]] for row in rows if len(row) in (10, 11)])
            except ValueError as err:
                raise ValueError(f"{path}: each line must be [frame name] x1 y1 ... x5 y5 ({err})") from err
            if len(points) != len(rows) or len(points) != len(clip):
                raise ValueError(f"{path}: {len(rows)} lines ({len(points)} valid) for a clip of {len(clip)} frames; "
                                 f"need one line 'x1 y1 ... x5 y5' per frame")
            points = points.reshape(-1, 5, 2)
            if self.cfg.landmark_sigma > 0:  # the restoration pipeline's smoothing (supp. Eq. 10)
                smoother = StreamingGaussian(self.cfg.landmark_sigma)
                smoothed = [v for p in points for v in smoother.push(p)] + smoother.finish()
                points = np.stack(smoothed)
            self._matrices[clip.name] = np.stack([crop_matrix(align_matrix(p), self.cfg.gt_size) for p in points])
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
        clip = self.clips[index % len(self.clips)]
        window = sample_window(len(clip), self.cfg.clip_length, self.cfg.intervals, rng,
                               self.cfg.reverse_prob, name=str(clip.path))
        matrices = self._align_matrices(clip)[window] if self.cfg.landmarks else None
        gt = self._crop(clip.read(window), clip.name, matrices)
        if rng.uniform() < self.cfg.hflip_prob:
            gt = np.ascontiguousarray(gt[:, :, ::-1])
        params = sample_params(self.cfg.degradation, rng)
        lq = degrade_clip(gt, params, self.cfg.degradation, rng)
        return {"gt": to_tensor(gt), "lq": to_tensor(lq), "key": f"{clip.name}/{window[0]:06d}"}


def to_tensor(frames: np.ndarray) -> torch.Tensor:
    """(T, H, W, 3) uint8 RGB -> (T, 3, H, W) float32 in [-1, 1]."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()
    return x / 127.5 - 1.0


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """(..., 3, H, W) in [-1, 1] -> (..., H, W, 3) uint8 (clamped), for logging and metrics."""
    x = ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.movedim(-3, -1).cpu().numpy()
