"""VFHQ-style training clips with the paper's video degradation (supplement Eq. 9).

One sample: a window of ``clip_length`` frames of one clip -> aligned GT crops -> one horizontal
flip decision for the whole window (after alignment, so crops and landmarks agree; the release flips
before aligning, ``spec/official-TRAINING.md`` §1) -> the degradation of the whole clip at once
(blur, ↓, noise, H.264 of the clip as one video, and optionally ↑).

Every random draw of a sample comes from one generator seeded by ``(seed, epoch, index)``; the
sampler hands ``(epoch, index)`` keys in, so a resumed run reproduces the data bit for bit.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Tuple, Union

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from keep.data.clips import list_clips
from keep.data.degradation import DegradationConfig, degrade_clip, sample_params
from keep.data.sampling import sample_window
from keep.registry import DATASETS


@dataclass
class ClipDatasetConfig:
    """Where the clips are and how a sample is drawn (``data.train`` / ``data.val`` in a stage config)."""

    root: str                                   # folder of clips (frame folders and/or videos)
    clips: List[str] = field(default_factory=list)   # only these clips (names); empty = all
    clip_length: int = 8                        # frames per sample (any length, odd included)
    intervals: List[int] = field(default_factory=lambda: [1])   # frame spacing drawn from this list
    gt_size: int = 512                          # side of the aligned GT crops
    # Frames must already be aligned gt_size crops; `resize: true` instead centre-crops each frame to
    # a square and resizes it to gt_size (smoke tests on unaligned videos; not for real training).
    resize: bool = False
    hflip_prob: float = 0.5
    reverse_prob: float = 0.0
    repeat: int = 1                             # dataset length = number of clips x repeat
    seed: int = 0
    degradation: DegradationConfig = field(default_factory=lambda: DegradationConfig(upsample=False))


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
        self.clips = list_clips(Path(cfg.root), cfg.clips)

    def __len__(self) -> int:
        return len(self.clips) * self.cfg.repeat

    def _crop(self, frames: np.ndarray, name: str) -> np.ndarray:
        size = self.cfg.gt_size
        _, h, w, _ = frames.shape
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
        gt = self._crop(clip.read(window), clip.name)
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
