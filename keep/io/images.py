"""Single images: tolerant reading (gray, alpha, 16-bit) and atomic writing."""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import List, Tuple

import cv2
import numpy as np

from keep.io.errors import InputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def natural_key(path: Path):
    """Sort key that puts ``frame2.png`` before ``frame10.png``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", Path(path).name)]


def list_frames(folder: Path) -> List[Path]:
    """The image files of ``folder`` in natural name order (the frame order of a frame folder)."""
    return sorted((p for p in Path(folder).iterdir()
                   if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not is_apple_double(p)),
                  key=natural_key)


def is_apple_double(path: Path) -> bool:
    """macOS writes ``._<name>`` metadata files beside every file it copies to a non-Apple disk (zips,
    USB sticks): ``._00000001.png`` is not a frame, and reading it would fail or add a bogus frame."""
    return Path(path).name.startswith("._")


def read_image(path: Path) -> Tuple[np.ndarray, str]:
    """Read an image file as ``(H, W, 3)`` uint8 RGB.

    Returns the image and a note (empty, or what had to be converted: gray -> 3 channels,
    alpha dropped, 16 bit -> 8 bit) so the caller can tell the user once.
    """
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise InputError(f"cannot read image {path}: the file is missing, corrupt or not a PNG/JPEG")
    notes = []
    if image.dtype == np.uint16:
        # 65535 -> 255 with rounding (the release divides and truncates).
        image = np.rint(image.astype(np.float32) / 257.0).astype(np.uint8)
        notes.append("16-bit converted to 8-bit")
    elif image.dtype != np.uint8:
        raise InputError(f"{path}: unsupported pixel type {image.dtype}; save it as an 8- or 16-bit PNG/JPEG")
    if image.ndim == 2 or image.shape[2] == 1:
        image = cv2.cvtColor(image.reshape(image.shape[:2]), cv2.COLOR_GRAY2RGB)
        notes.append("grayscale converted to 3 channels")
    elif image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
        notes.append("alpha channel dropped")
    else:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    return np.ascontiguousarray(image), ", ".join(notes)


def write_image(path: Path, image: np.ndarray) -> None:
    """Write ``(H, W, 3)`` uint8 RGB to ``path`` atomically (temporary name, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, data = cv2.imencode(path.suffix or ".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:
        raise OSError(f"could not encode image for {path}")
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data.tobytes())
    os.replace(tmp, path)
