"""Similarity alignment of a face to the 512x512 FFHQ template, as the release does it."""
from __future__ import annotations

import cv2
import numpy as np

FACE_SIZE = 512

# Five points (x, y) in the 512x512 crop, RetinaFace order: eyes, nose tip, mouth corners
# (the FFHQ template of facexlib / CodeFormer used by the release).
FFHQ_TEMPLATE_512 = np.array([[192.98138, 239.94708], [318.90277, 240.1936], [256.63416, 314.01935],
                              [201.26117, 371.41043], [313.08905, 371.15118]], dtype=np.float64)

# Fill for crop pixels outside the frame: the release's BGR (135, 133, 132), here in RGB.
BORDER_RGB = (132, 133, 135)


def align_matrix(landmarks: np.ndarray) -> np.ndarray:
    """(5, 2) frame landmarks -> (2, 3) similarity matrix mapping the frame onto the 512 crop.

    Fitted with ``cv2.estimateAffinePartial2D(..., method=LMEDS)`` (4 degrees of freedom), the
    release's estimator, so crops match the release's for the same landmarks.
    """
    matrix, _ = cv2.estimateAffinePartial2D(np.asarray(landmarks, np.float64).reshape(5, 2), FFHQ_TEMPLATE_512,
                                            method=cv2.LMEDS)
    if matrix is None:
        raise ValueError("degenerate landmarks: no similarity transform fits them")
    return matrix


def crop_matrix(matrix: np.ndarray, size: int) -> np.ndarray:
    """(2, 3) frame -> 512-crop matrix turned into frame -> ``size``-crop (pixel centres aligned).

    Networks with another input size (tiny test models) get the same crop, resampled.
    """
    if size == FACE_SIZE:
        return matrix
    scale = size / FACE_SIZE
    offset = 0.5 * (scale - 1.0)
    return np.vstack([scale * matrix[0] + [0, 0, offset], scale * matrix[1] + [0, 0, offset]])


def warp_face(image: np.ndarray, matrix: np.ndarray, size: int = FACE_SIZE) -> np.ndarray:
    """Crop: (H, W, 3) uint8 frame -> (size, size, 3) uint8 aligned face (bilinear, grey border)."""
    return cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=BORDER_RGB)
