"""Clip folders for evaluation and test-split synthesis.

A root holds one clip per entry, either a folder of frame images (sorted by name, natural order) or
a video file; a root that itself holds frame images is a single clip named after the folder::

    root/clip_a/00000000.png 00000001.png ...
    root/clip_b.mp4

Frames are (T, H, W, 3) uint8 RGB.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional

import numpy as np
from tqdm import tqdm

from keep.io import IMAGE_SUFFIXES, VIDEO_SUFFIXES, list_frames
from keep.io.images import natural_key
from keep.io.outputs import FrameFolderWriter

RESTORED_FACES = "restored_faces"  # the sub-folder `keep restore --save-faces` writes


def list_clips(root: Path) -> Dict[str, Path]:
    """Clip name -> path (frame folder or video file) under ``root``, sorted by name.

    ``keep restore --aligned --save-faces`` output is recognised: its ``<clip>/restored_faces/`` PNGs
    are used rather than ``<clip>.mp4``, so metrics do not include the video codec's loss."""
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"{root} does not exist; give a folder of per-clip frame folders or videos")
    if root.is_file():
        if root.suffix.lower() not in VIDEO_SUFFIXES:
            raise ValueError(f"{root} is neither a folder nor a video ({', '.join(VIDEO_SUFFIXES)})")
        return {root.stem: root}
    if list_frames(root):
        return {root.name: root}
    clips: Dict[str, Path] = {}
    for entry in sorted(root.iterdir(), key=natural_key):
        if entry.name.startswith("."):
            continue   # hidden: e.g. temporary folders of an interrupted `keep degrade`
        if entry.is_file() and entry.suffix.lower() in VIDEO_SUFFIXES:
            clips.setdefault(entry.stem, entry)
        elif entry.is_dir():
            frames = _frame_folder(entry)
            if frames is not None:
                clips[entry.name] = frames  # lossless frames win over an encoded video of that name
    if not clips:
        raise ValueError(f"no clips found in {root}: expected sub-folders of frames "
                         f"({', '.join(IMAGE_SUFFIXES)}) or video files ({', '.join(VIDEO_SUFFIXES)})")
    return clips


def write_frames(frames: np.ndarray, dest: Path, desc: str = "", command: str = "keep") -> None:
    """Write (T, H, W, 3) uint8 RGB as ``dest/00000000.png ...`` atomically: into a hidden temporary
    sibling folder first, then swapped in, so ``dest`` is either complete or absent. An existing
    ``dest`` is replaced only if a keep command made it (keep/io/outputs.py)."""
    folder = FrameFolderWriter(Path(dest), command)
    try:
        for frame in tqdm(frames, desc=desc or folder.dest.name, leave=False, disable=not desc):
            folder.add(frame)
        folder.commit()
    except BaseException:
        folder.abort()
        raise


def _frame_folder(folder: Path) -> Optional[Path]:
    """``folder`` if it holds frames; its ``restored_faces/`` if it is the per-clip folder of
    ``keep restore --aligned --save-faces`` (lossless PNG, better than the CRF-encoded video);
    else None."""
    if list_frames(folder):
        return folder
    faces = folder / RESTORED_FACES
    if faces.is_dir() and list_frames(faces):
        return faces
    return None
