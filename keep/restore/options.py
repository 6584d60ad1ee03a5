"""Settings of a restore run (filled by the CLI, usable from Python)."""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Optional


@dataclass
class RestoreOptions:
    output_dir: Path
    weights: str = "keep-v1"              # registry name or checkpoint path
    detector: str = "retinaface"          # "retinaface" (release default) or "dlib" (offline)
    aligned: bool = False                 # inputs are aligned face crops (release --has_aligned)
    all_faces: bool = False               # False: one face, the one nearest the centre, tracked
    window: Optional[int] = None          # frames per network call; None: 20 (release max_length), 4 on the CPU
    reset_state_per_window: bool = False  # True: every window starts fresh, as the release
    image_baseline: bool = False          # True: every frame restored alone (no propagation)
    upscale: int = 1                      # whole-frame scale of the output
    bg_upsampler: Optional[str] = None    # None or "realesrgan"
    bg_tile: int = 400                    # Real-ESRGAN tile size (tile pad 40)
    face_upsample: bool = False           # Real-ESRGAN on the restored face before pasting (upscale > 1)
    mask: str = "auto"                    # "auto" (parsing if its weights are present), "parse", "square"
    draw_box: bool = False
    fps: Optional[Fraction] = None        # override the output rate (drops the audio of a video input)
    stream: Optional[int] = None          # container index of the video stream (None: the one with most frames)
    device: str = "auto"                  # "auto", "cuda", "mps", "cpu"
    precision: str = "fp32"               # "fp32", "fp32-strict" (TF32 off), "fp16", "bf16" (autocast, GPU only)
    sigma: float = 5.0                    # landmark smoothing (paper: sigma 5, radius 20)
    max_gap: int = 20                     # frames without detection bridged inside a track
    shots: str = "auto"                   # shot boundaries: "auto" (detected), "off", or a cut-list file
    min_face: float = 48.0                # px: faces whose aligned crop covers less are left untouched
    save_faces: bool = False
    save_cropped: bool = False
    save_frames: bool = False
    compare: bool = False
    overwrite: bool = False
    crf: int = 18                         # x264 quality of the written videos
    progress: bool = True
    overlap: Optional[bool] = None        # decode, network, paste-back + encode in threads; None = on a GPU only
    max_batch: Optional[int] = None       # faces per network call (None: from the device's free memory)
    frame_memory: Optional[float] = None  # GiB of frames held in memory, beyond it in temporary files (None: auto)
    device_path: str = "auto"             # internal (CI): "force" runs the GPU code path on any device (see
                                          # keep/restore/device_geometry.py: device_path_forced)
    backend: str = "torch"                # "torch", or "onnxruntime" / "openvino" (keep/deploy)
