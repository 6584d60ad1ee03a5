"""Frame t in, frame t out: causal face tracking, the causal network and paste-back, one frame at a time.

Faces come from the file pipeline's own face module, :class:`keep.face.tracks.FaceTracks`, in its
causal variant (no look-ahead: One Euro smoothing instead of the centred Gaussian, the last landmarks
held instead of interpolating to the next detection), with shot boundaries found causally
(:class:`keep.face.shots.Shots`: hard cuts, decided from past frames): a cut ends every track, so no
landmark is held onto the next shot. The network runs
:meth:`keep.archs.keep_net.KEEP.restore_frame` (causal gain), one Kalman state per track.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Dict, Optional

import cv2
import numpy as np
import torch

from keep.face.align import crop_matrix, warp_face
from keep.face.detect import FaceDetector
from keep.face.paste import FacePaster, gray_face, to_uint8
from keep.face.shots import Shots
from keep.face.tracks import MIN_FACE, CausalSmoothing, FaceReady, FaceTracks, TrackEnded
from keep.restore.restorer import faces_to_tensor, tensor_to_faces

_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


# One Euro parameters and the landmark hold (min_cutoff, beta, d_cutoff, max_hold, enabled)
SmoothingOptions = CausalSmoothing


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


@dataclass
class FrameReport:
    faces: int = 0          # faces restored and pasted in this frame
    detected: int = 0       # detections in this frame
    held: int = 0           # faces pasted from held landmarks (no detection this frame)


class LiveFaceRestorer:
    """``process(image, time, read)`` -> the output frame, using nothing after ``time``.

    ``aligned``: frames are aligned face crops (resized to the network's size); the output is the
    restored crop. Otherwise faces are detected, tracked (one face near the centre, or all),
    smoothed causally, cropped, restored and pasted into the frame, which is returned at input size.
    """

    def __init__(self, network: CausalNetwork, aligned: bool = False, detector: Optional[FaceDetector] = None,
                 paster: Optional[FacePaster] = None, all_faces: bool = False,
                 smoothing: Optional[SmoothingOptions] = None, shots: str = "auto", min_face: float = MIN_FACE):
        if not aligned and (detector is None or paster is None):
            raise ValueError("in-the-wild frames need a face detector and a paster (or aligned=True)")
        self.network, self.aligned, self.detector, self.paster = network, aligned, detector, paster
        self.smoothing = smoothing or SmoothingOptions()
        self.faces = FaceTracks(all_faces=all_faces, max_gap=self.smoothing.max_hold, min_face=min_face,
                                causal=self.smoothing)
        self.shots = Shots(shots, causal=True)
        self.index = 0                 # frames processed (the shot detector's and the tracks' clock)
        self.track = 0                 # aligned mode: the current shot's track
        self.frames_without_face = 0   # written as the input frame
        self.faces_held = 0            # faces pasted from held landmarks
        self.last = FrameReport()

    @property
    def tracks_started(self) -> int:
        return self.faces.tracks_started

    @property
    def small_faces(self) -> int:
        return self.faces.small_faces

    @property
    def cuts(self):
        return self.shots.cuts

    @property
    def late_cuts(self):
        """(first frame of the new shot, frame the state was reset at) of dissolves and fades."""
        return self.shots.late_cuts

    @property
    def size(self) -> int:
        return self.network.size

    def warm_up(self) -> None:
        self.network.warm_up()

    def output_size(self, width: int, height: int):
        return (self.size, self.size) if self.aligned else (width, height)

    def process(self, image: np.ndarray, time: float, read: Optional[int] = None) -> np.ndarray:
        """``read``: the frame's number among the frames read from the source (a --shots cut list counts
        them, dropped frames included); default: frames processed so far."""
        index = self.index
        self.index += 1
        cut = self.shots.push(image, read)
        if self.aligned:
            if image.shape[:2] != (self.size, self.size):
                image = cv2.resize(image, (self.size, self.size), interpolation=cv2.INTER_LINEAR)
            if cut:   # a new shot: a fresh state
                self.network.end_track(self.track)
                self.track += 1
            self.last = FrameReport(faces=1)
            return self.network.restore(self.track, image)
        report = FrameReport()
        detections = self.detector.detect(image)
        report.detected = len(detections)
        canvas = image.astype(np.float32)
        gray = np.array_equal(image[..., 0], image[..., 1]) and np.array_equal(image[..., 1], image[..., 2])
        for event in self.faces.push(index, image, detections, cut=cut, time=time):
            if isinstance(event, TrackEnded):
                self.network.end_track(event.track)
            elif isinstance(event, FaceReady):
                crop = warp_face(image, crop_matrix(event.matrix, self.size), self.size)
                restored = self.network.restore(event.track, crop)
                self.paster.paste(canvas, gray_face(restored) if gray else restored, event.matrix)
                report.faces += 1
                report.held += event.held
        self.last = report
        self.frames_without_face += report.faces == 0
        self.faces_held += report.held
        return to_uint8(canvas)
