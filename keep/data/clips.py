"""Where training clips come from: a folder of frame images per clip, or a video file per clip.

Layout of a dataset root (both kinds may be mixed)::

    datasets/VFHQ/train/
        clip_0001/00000000.png 00000001.png ...   # one folder of frames per clip (sorted by name)
        clip_0002.mp4                             # or one video file per clip

Frames are returned as RGB uint8 arrays ``(T, H, W, 3)``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np

from keep.io import VIDEO_SUFFIXES, IMAGE_SUFFIXES, InputError, list_frames, read_frames, read_image


class ClipSource:
    """One clip: a frame folder or a video file. Frames are read on demand (folders) or decoded
    once and kept in memory (videos, whose random access would otherwise decode from the start)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.name = self.path.stem if self.path.is_file() else self.path.name
        self._files: List[Path] = []
        self._video = None
        if self.path.is_dir():
            self._files = list_frames(self.path)
            if not self._files:
                raise ValueError(f"clip folder {self.path} holds no frames ({', '.join(IMAGE_SUFFIXES)})")
        self._num_frames = len(self._files) if self._files else None

    def _decode(self) -> np.ndarray:
        if self._video is None:
            try:
                self._video = read_frames(self.path)
            except InputError as err:
                raise ValueError(f"cannot decode video clip {self.path}: {err}") from err
            self._num_frames = len(self._video)
        return self._video

    def __len__(self) -> int:
        if self._num_frames is None:
            self._decode()
        return int(self._num_frames)

    def read(self, indices: Sequence[int]) -> np.ndarray:
        """Frames at ``indices`` as (len(indices), H, W, 3) uint8 RGB."""
        if self._files:
            frames = [read_image(self._files[i])[0] for i in indices]
            shapes = {f.shape for f in frames}
            if len(shapes) > 1:
                raise ValueError(f"frames of clip {self.path} differ in size: {sorted(shapes)}")
            return np.stack(frames)
        return self._decode()[list(indices)]


def list_clips(root: Path, names: Sequence[str] = ()) -> List[ClipSource]:
    """Clips under ``root`` (frame folders and video files, sorted by name); ``names`` keeps only
    those clips (by folder name or video stem), in the given order."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset root {root} does not exist; put clips there "
                                f"(one frame folder or video per clip, see docs/training.md)")
    found: Dict[str, Path] = {}
    for p in sorted(root.iterdir()):
        if p.name.startswith("."):   # macOS ``._*`` metadata, temporaries of an interrupted keep command
            continue
        if p.is_dir() or p.suffix.lower() in VIDEO_SUFFIXES:
            found[p.stem if p.is_file() else p.name] = p
    if names:
        missing = [n for n in names if n not in found]
        if missing:
            raise FileNotFoundError(f"clips {missing} listed in the config are not in {root}")
        found = {n: found[n] for n in names}
    if not found:
        raise FileNotFoundError(f"no clips in {root}: expected frame folders or videos ({', '.join(VIDEO_SUFFIXES)})")
    return [ClipSource(p) for p in found.values()]
