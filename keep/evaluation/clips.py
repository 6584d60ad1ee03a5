"""Clip folders for evaluation and test-split synthesis.

A root holds one clip per entry, either a folder of frame images (sorted by name, natural order) or
a video file; a root that itself holds frame images is a single clip named after the folder::

    root/clip_a/00000000.png 00000001.png ...
    root/clip_b.mp4

Frames are (T, H, W, 3) uint8 RGB.
"""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Dict, Optional

import av
import cv2
import numpy as np
from tqdm import tqdm

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
VIDEO_EXTS = (".mp4", ".mkv", ".avi", ".mov", ".webm")


def _natural_key(path: Path):
    return [int(s) if s.isdigit() else s for s in re.split(r"(\d+)", path.name)]


def frame_files(folder: Path) -> list[Path]:
    return sorted((p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_EXTS), key=_natural_key)


def list_clips(root: Path) -> Dict[str, Path]:
    """Clip name -> path (frame folder or video file) under ``root``, sorted by name."""
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"{root} does not exist; give a folder of per-clip frame folders or videos")
    if root.is_file():
        if root.suffix.lower() not in VIDEO_EXTS:
            raise ValueError(f"{root} is neither a folder nor a video ({', '.join(VIDEO_EXTS)})")
        return {root.stem: root}
    if frame_files(root):
        return {root.name: root}
    clips = {}
    for entry in sorted(root.iterdir(), key=_natural_key):
        if entry.name.startswith("."):
            continue   # hidden: e.g. temporary folders of an interrupted `keep degrade`
        if (entry.is_dir() and frame_files(entry)) or (entry.is_file() and entry.suffix.lower() in VIDEO_EXTS):
            clips[entry.stem if entry.is_file() else entry.name] = entry
    if not clips:
        raise ValueError(f"no clips found in {root}: expected sub-folders of frames "
                         f"({', '.join(IMAGE_EXTS)}) or video files ({', '.join(VIDEO_EXTS)})")
    return clips


def read_clip(path: Path, max_frames: Optional[int] = None) -> np.ndarray:
    """All frames (or the first ``max_frames``) of a frame folder or video -> (T, H, W, 3) uint8 RGB."""
    path = Path(path)
    frames = []
    if path.is_dir():
        for f in frame_files(path)[:max_frames]:
            img = cv2.imread(str(f), cv2.IMREAD_COLOR)
            if img is None:
                raise ValueError(f"cannot read image {f}")
            frames.append(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
    else:
        with av.open(str(path)) as container:
            for frame in container.decode(video=0):
                if max_frames is not None and len(frames) >= max_frames:
                    break
                frames.append(frame.to_ndarray(format="rgb24"))
    if not frames:
        raise ValueError(f"clip {path} has no frames")
    shapes = {f.shape for f in frames}
    if len(shapes) > 1:
        raise ValueError(f"clip {path} mixes frame sizes {sorted(shapes)}")
    return np.stack(frames)


def write_frames(frames: np.ndarray, dest: Path, desc: str = "") -> None:
    """Write (T, H, W, 3) uint8 RGB as ``dest/00000000.png ...`` atomically: into a hidden temporary
    sibling folder first, then renamed, so ``dest`` is either complete or absent."""
    dest = Path(dest)
    tmp = dest.parent / f".{dest.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for i, frame in enumerate(tqdm(frames, desc=desc or dest.name, leave=False, disable=not desc)):
        if not cv2.imwrite(str(tmp / f"{i:08d}.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)):
            raise OSError(f"could not write {tmp / f'{i:08d}.png'}")
    if dest.exists():
        shutil.rmtree(dest)
    os.replace(tmp, dest)
