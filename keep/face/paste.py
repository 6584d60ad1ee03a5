"""Paste restored faces back into the frame through the inverse alignment, with a soft mask.

Works on a float32 canvas so several faces can be blended in turn and the frame is rounded once
at the end (the release truncates with ``astype(uint8)``, a -0.5 level bias). Pixels where the
mask is 0 (everything outside the warped crop square) keep the canvas value exactly, so with
``upscale=1`` they are the input frame, bit for bit.
"""
from __future__ import annotations

from typing import Callable, Optional

import cv2
import numpy as np

from keep.face.align import FACE_SIZE

_GREEN = (0.0, 255.0, 0.0)


def _homogeneous(matrix: np.ndarray) -> np.ndarray:
    return np.vstack([matrix, [0.0, 0.0, 1.0]])


def _pixel_scale(scale: float) -> np.ndarray:
    """Map pixel coordinates of an image to those of the image resized by ``scale`` (pixel centres align)."""
    offset = 0.5 * (scale - 1.0)
    return np.array([[scale, 0.0, offset], [0.0, scale, offset], [0.0, 0.0, 1.0]])


class FacePaster:
    """Blend a (F, F, 3) restored face onto a canvas of the frame upscaled by ``upscale``.

    ``parse`` (optional) maps a (512, 512, 3) uint8 face to a (512, 512) mask in [0, 1]; the final
    mask is the minimum of that and the feathered crop square (as the release). Without it the
    feathered square alone is used.
    """

    def __init__(self, upscale: float = 1.0, parse: Optional[Callable[[np.ndarray], np.ndarray]] = None,
                 draw_box: bool = False):
        self.upscale = upscale
        self.parse = parse
        self.draw_box = draw_box

    def face_to_canvas(self, matrix: np.ndarray, face_size: int) -> np.ndarray:
        """(3, 3) map from pixels of a ``face_size`` restored face to canvas pixels.

        ``matrix`` (2, 3) maps the frame onto the 512 crop; its inverse is composed with the
        frame -> canvas resize (pixel-centre aligned; the release adds 0.5*s instead of
        0.5*(s-1), a half-pixel shift) and the face -> 512 crop resize when the face was upsampled.
        """
        crop_to_frame = _homogeneous(cv2.invertAffineTransform(matrix))
        face_to_crop = _pixel_scale(FACE_SIZE / face_size)
        return _pixel_scale(self.upscale) @ crop_to_frame @ face_to_crop

    def paste(self, canvas: np.ndarray, face: np.ndarray, matrix: np.ndarray,
              face_512: Optional[np.ndarray] = None) -> None:
        """Blend ``face`` (F, F, 3) uint8 RGB into ``canvas`` (H, W, 3) float32 in place.

        ``face_512`` is the restored face at 512 (for the parsing mask) when ``face`` was upsampled.
        """
        size = face.shape[0]
        full = self.face_to_canvas(matrix, size)
        corners = np.array([[-0.5, -0.5, 1], [size - 0.5, -0.5, 1], [size - 0.5, size - 0.5, 1], [-0.5, size - 0.5, 1]])
        points = (full @ corners.T).T[:, :2]
        height, width = canvas.shape[:2]
        # Work in the bounding box of the warped square only (plus a margin for the erosion).
        x0, y0 = np.maximum(np.floor(points.min(0)).astype(int) - 2, 0)
        x1, y1 = np.minimum(np.ceil(points.max(0)).astype(int) + 3, [width, height])
        if x1 <= x0 or y1 <= y0:
            return
        roi = full.copy()
        roi[:2, 2] -= (x0, y0)
        roi = roi[:2]
        box = (int(x1 - x0), int(y1 - y0))
        warped = cv2.warpAffine(face.astype(np.float32), roi, box, flags=cv2.INTER_LINEAR, borderValue=0)
        square = cv2.warpAffine(np.ones((size, size), np.float32), roi, box, flags=cv2.INTER_LINEAR, borderValue=0)
        # Feathered square (release): erode by 2*scale, then by 2*edge with edge = sqrt(area)/20, and
        # blur with a (2*edge+1) kernel so the weight falls to 0 inside the square.
        erode = max(1, int(2 * self.upscale))
        square = cv2.erode(square, np.ones((erode, erode), np.uint8))
        edge = int(np.sqrt(square.sum())) // 20
        mask = square
        if edge > 0:
            mask = cv2.erode(square, np.ones((2 * edge, 2 * edge), np.uint8))
            mask = cv2.GaussianBlur(mask, (2 * edge + 1, 2 * edge + 1), 0)
        if self.parse is not None:
            parsed = self.parse(face if face_512 is None else face_512)
            if parsed.shape[0] != size:
                parsed = cv2.resize(parsed, (size, size), interpolation=cv2.INTER_LINEAR)
            parsed = cv2.warpAffine(parsed.astype(np.float32), roi, box, flags=cv2.INTER_LINEAR, borderValue=0)
            mask = np.minimum(mask, parsed)
        mask = mask[..., None]
        region = canvas[y0:y1, x0:x1]
        region *= 1.0 - mask
        region += mask * warped
        if self.draw_box:
            outline = np.round(points).astype(np.int32).reshape(-1, 1, 2)
            cv2.polylines(canvas, [outline], True, _GREEN, max(1, int(round(2 * self.upscale))))


def to_uint8(canvas: np.ndarray) -> np.ndarray:
    """Round (not truncate) a float canvas to uint8."""
    return np.clip(np.rint(canvas), 0, 255).astype(np.uint8)


def gray_face(face: np.ndarray) -> np.ndarray:
    """Restored face of a grayscale frame made gray again (ITU-R 601 weights, rounded)."""
    luma = face.astype(np.float32) @ np.array([0.2989, 0.587, 0.114], np.float32)
    return np.repeat(np.clip(np.rint(luma), 0, 255).astype(np.uint8)[..., None], 3, axis=2)
