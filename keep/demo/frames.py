"""The frame viewer: input frame, output frame and the aligned face crop before / after, at any index.

Output frames and face crops are the PNGs the pipeline writes itself (``save_frames``, ``save_cropped``,
``save_faces``); input frames are decoded once after the run with the pipeline's own reader, so
index ``i`` is the same frame on both sides.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import cv2

from keep.io.images import write_image
from keep.io.source import open_source

INPUT_FRAME_WIDTH = 1280   # viewer copies of the input frames are at most this wide (JPEG)


def extract_input_frames(source: Path, dest: Path, check: Callable[[], None] = lambda: None) -> int:
    """Write every frame of ``source`` as ``dest/<index:08d>.jpg``; ``check`` may raise to stop."""
    count = 0
    with open_source(source) as frames:
        for frame in frames:
            check()
            image = frame.image
            if image.shape[1] > INPUT_FRAME_WIDTH:
                height = round(image.shape[0] * INPUT_FRAME_WIDTH / image.shape[1])
                image = cv2.resize(image, (INPUT_FRAME_WIDTH, height), interpolation=cv2.INTER_AREA)
            write_image(dest / f"{frame.index:08d}.jpg", image)
            count += 1
    return count


@dataclass
class FrameView:
    index: int
    input: Optional[Path]
    output: Optional[Path]
    crop: Optional[Path]       # aligned face crop fed to the network
    face: Optional[Path]       # the network's restored face
    caption: str


def frame_view(result, index: int) -> FrameView:
    """What the viewer shows for frame ``index`` of a :class:`keep.demo.job.RunResult`; the index is
    clamped to the clip. With several faces, the first face (lowest track id) is shown."""
    index = max(0, min(int(index), result.frames - 1))
    name = f"{index:08d}"

    def existing(path: Path) -> Optional[Path]:
        return path if path.is_file() else None

    if result.aligned:
        crop, face = existing(result.crops / f"{name}.png"), existing(result.faces / f"{name}.png")
    else:
        crops = sorted(result.crops.glob(f"{name}_*.png"))
        crop = crops[0] if crops else None
        face = existing(result.faces / crop.name) if crop is not None else None
    caption = f"frame {index + 1} of {result.frames} (t = {index / result.fps:.2f} s)"
    if crop is None:
        caption += " · no face restored in this frame (written as the input)"
    return FrameView(index, existing(result.input_frames / f"{name}.jpg"),
                     existing(result.output_frames / f"{name}.png"), crop, face, caption)
