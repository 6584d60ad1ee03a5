"""Frame t in, frame t out: causal face tracking, the causal network and paste-back, one frame at a time.

Reuses the file pipeline's parts (:mod:`keep.face` detection, tracking, alignment and paste-back;
:mod:`keep.restore.restorer` tensor conversions and devices) and replaces the two that look ahead:
landmark smoothing (One Euro instead of the centred Gaussian) and gap filling (hold the last
landmarks instead of interpolating to the next detection). The network runs
:meth:`keep.archs.keep_net.KEEP.restore_frame` (causal gain), one Kalman state per track.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Dict, Optional

import cv2
import numpy as np
import torch

from keep.face.align import align_matrix, crop_matrix, warp_face
from keep.face.causal_smoothing import LandmarkHold, OneEuroFilter
from keep.face.detect import FaceDetector
from keep.face.paste import FacePaster, gray_face, to_uint8
from keep.face.tracking import FaceTracker
from keep.restore.restorer import faces_to_tensor, tensor_to_faces

_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass
class SmoothingOptions:
    min_cutoff: float = 1.0     # One Euro cutoff at rest, Hz
    beta: float = 0.02          # cutoff increase per px/s of landmark speed
    d_cutoff: float = 1.0       # speed low-pass, Hz
    max_hold: int = 10          # frames a lost face keeps its last landmarks before its track ends
    enabled: bool = True        # False: raw detections (no smoothing)


class CausalNetwork:
    """The network in causal mode with one :class:`KalmanState` per track."""

    def __init__(self, net: torch.nn.Module, device: torch.device, precision: str = "fp32"):
        if precision in _DTYPES and device.type == "cpu":
            raise ValueError(f"--{precision} needs a GPU (autocast on CUDA/MPS); on CPU run in fp32")
        self.net, self.device, self.dtype = net, device, _DTYPES.get(precision)
        self.size = int(net.img_size)
        self._states: Dict[int, object] = {}

    @torch.inference_mode()
    def restore(self, track: int, crop: np.ndarray) -> np.ndarray:
        """(n, n, 3) uint8 aligned crop -> restored crop, continuing ``track``'s state."""
        context = (torch.autocast(device_type=self.device.type, dtype=self.dtype) if self.dtype is not None
                   else contextlib.nullcontext())
        with context:
            out, self._states[track] = self.net.restore_frame(faces_to_tensor([crop], self.device)[:, 0],
                                                              self._states.get(track))
        return tensor_to_faces(out[:, None])[0]

    def end_track(self, track: int) -> None:
        self._states.pop(track, None)

    def warm_up(self) -> None:
        """One throw-away frame, so the first live frame does not pay for lazy initialisation
        (allocator, oneDNN / cuDNN kernel selection)."""
        self.restore(-1, np.full((self.size, self.size, 3), 128, np.uint8))
        self.end_track(-1)

    @property
    def tracks(self) -> int:
        return len(self._states)


class _LiveTrack:
    def __init__(self, options: SmoothingOptions):
        self.filter = OneEuroFilter(options.min_cutoff, options.beta, options.d_cutoff) if options.enabled else None
        self.hold = LandmarkHold(options.max_hold)
        self.landmarks: Optional[np.ndarray] = None


@dataclass
class FrameReport:
    faces: int = 0          # faces restored and pasted in this frame
    detected: int = 0       # detections in this frame
    held: int = 0           # faces pasted from held landmarks (no detection this frame)


class LiveFaceRestorer:
    """``process(image, time)`` -> the output frame, using nothing after ``time``.

    ``aligned``: frames are aligned face crops (resized to the network's size); the output is the
    restored crop. Otherwise faces are detected, tracked (one face near the centre, or all),
    smoothed causally, cropped, restored and pasted into the frame, which is returned at input size.
    """

    def __init__(self, network: CausalNetwork, aligned: bool = False, detector: Optional[FaceDetector] = None,
                 paster: Optional[FacePaster] = None, all_faces: bool = False,
                 smoothing: Optional[SmoothingOptions] = None):
        if not aligned and (detector is None or paster is None):
            raise ValueError("in-the-wild frames need a face detector and a paster (or aligned=True)")
        self.network, self.aligned, self.detector, self.paster = network, aligned, detector, paster
        self.smoothing = smoothing or SmoothingOptions()
        self.tracker = FaceTracker(all_faces=all_faces)
        self.tracks: Dict[int, _LiveTrack] = {}
        self.tracks_started = 0
        self.frames_without_face = 0   # written as the input frame
        self.faces_held = 0            # faces pasted from held landmarks
        self.last = FrameReport()

    @property
    def size(self) -> int:
        return self.network.size

    def warm_up(self) -> None:
        self.network.warm_up()

    def output_size(self, width: int, height: int):
        return (self.size, self.size) if self.aligned else (width, height)

    def process(self, image: np.ndarray, time: float) -> np.ndarray:
        if self.aligned:
            if image.shape[:2] != (self.size, self.size):
                image = cv2.resize(image, (self.size, self.size), interpolation=cv2.INTER_LINEAR)
            self.last = FrameReport(faces=1)
            return self.network.restore(0, image)
        report = FrameReport()
        detections = self.detector.detect(image)
        report.detected = len(detections)
        assigned = self.tracker.update(detections, image.shape[1], image.shape[0])
        for tid in assigned:
            if tid not in self.tracks:
                self.tracks[tid] = _LiveTrack(self.smoothing)
                self.tracks_started += 1
        canvas = image.astype(np.float32)
        gray = np.array_equal(image[..., 0], image[..., 1]) and np.array_equal(image[..., 1], image[..., 2])
        for tid in sorted(self.tracks):
            track = self.tracks[tid]
            det = assigned.get(tid)
            raw = track.hold.push(None if det is None else det.landmarks.reshape(5, 2))
            if raw is None:      # lost: held too long
                self._end(tid)
                continue
            if det is not None:
                track.landmarks = raw if track.filter is None else track.filter(raw, time)
            else:
                report.held += 1   # keep the last smoothed landmarks; the filter sees no fake sample
            matrix = align_matrix(track.landmarks)
            crop = warp_face(image, crop_matrix(matrix, self.size), self.size)
            restored = self.network.restore(tid, crop)
            self.paster.paste(canvas, gray_face(restored) if gray else restored, matrix)
            report.faces += 1
        self.last = report
        self.frames_without_face += report.faces == 0
        self.faces_held += report.held
        return to_uint8(canvas)

    def _end(self, tid: int) -> None:
        self.network.end_track(tid)
        self.tracker.drop(tid)
        del self.tracks[tid]
