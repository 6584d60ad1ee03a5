"""Average Keypoint Distance (AKD, σ_AKD), after Tzaban et al. (Stitch it in Time).

AKD of a frame = mean over the 68 facial landmarks of the Euclidean distance (pixels) between the
landmarks detected on the restored frame and on the GT frame, measured on 512×512 frames (distances
on frames of another size are rescaled to 512). The clip's AKD is the mean over frames, σ_AKD the
standard deviation over frames (ddof 0); tables average both over clips.

Landmark detector: the paper follows Tzaban et al., who use FAN (face-alignment). That package and
its weights are not available offline, so ``keep eval`` uses **dlib's 68-point shape predictor**
(``shape_predictor_68_face_landmarks.dat``), labelled ``akd_dlib`` in every output. Both frames use
the face box detected on the GT frame (see :mod:`keep.metrics.dlib_face`).
"""
from __future__ import annotations

import numpy as np

from keep.metrics.dlib_face import face_box, model_file, shape_predictor
from keep.registry import METRICS

_PREDICTOR = "shape_predictor_68_face_landmarks.dat"


def akd(points_pred: np.ndarray, points_gt: np.ndarray) -> float:
    """Mean Euclidean distance of two (K, 2) landmark sets, in their pixel units."""
    points_pred, points_gt = np.asarray(points_pred, float), np.asarray(points_gt, float)
    if points_pred.shape != points_gt.shape or points_pred.ndim != 2 or points_pred.shape[1] != 2:
        raise ValueError(f"landmark sets must both be (K, 2), got {points_pred.shape} and {points_gt.shape}")
    return float(np.linalg.norm(points_pred - points_gt, axis=1).mean())


def dlib_landmarks(frame: np.ndarray, box) -> np.ndarray:
    """68 (x, y) landmarks of (H, W, 3) uint8 RGB ``frame`` inside dlib rectangle ``box`` -> (68, 2)."""
    shape = shape_predictor(_PREDICTOR)(np.ascontiguousarray(frame), box)
    return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)


@METRICS.register("akd")
class KeypointDistance:
    """Per-frame AKD of a clip: (T, H, W, 3) uint8 x2 -> (T,) distances in 512-frame pixels."""

    name = "akd"
    higher_is_better = False
    label = "akd_dlib"
    backbone = "dlib 68-point shape predictor (iBUG 300-W)"
    convention = "dlib 68 points (OFFLINE SUBSTITUTE for FAN), GT face box, pixels at 512x512"

    def __init__(self):
        model_file(_PREDICTOR)   # fail early (MetricUnavailable) if the model file is absent

    def __call__(self, pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
        out = []
        for p, g in zip(pred, gt):
            box = face_box(g)
            out.append(akd(dlib_landmarks(p, box), dlib_landmarks(g, box)) * 512.0 / g.shape[1])
        return np.array(out)
