"""Streaming restoration of one input: decode -> detect -> track -> smooth -> restore -> paste -> encode.

Frames wait in a buffer only until every track that may cover them has its smoothed landmarks
(look-ahead: ``max_gap`` for gap filling + the smoothing radius) and its window has been through
the network, so memory is bounded by ``max_gap + radius + window`` frames, not by the video's
length (the release decodes the whole video and stacks every crop on the GPU).
"""
from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Callable, Deque, Dict, List, Optional

import cv2
import numpy as np
import torch
from tqdm import tqdm

from keep.face.align import FACE_SIZE, align_matrix, crop_matrix, warp_face
from keep.face.detect import FaceDetector, make_detector
from keep.face.paste import FacePaster, gray_face, to_uint8
from keep.face.smoothing import GapFiller, StreamingGaussian
from keep.face.tracking import FaceTracker
from keep.io.errors import InputError
from keep.io.images import write_image
from keep.io.source import Frame, SourceInfo, open_source
from keep.io.writer import VideoWriter
from keep.restore.options import RestoreOptions
from keep.restore.restorer import FaceRestorer, resolve_device
from keep.weights import WeightsNotFoundError


@dataclass
class RunSummary:
    """What one input produced, printed at the end of a run."""
    input: Path
    output: Path
    frames: int = 0
    detections: int = 0
    tracks: int = 0
    frames_without_detection: int = 0   # detector found nothing (gaps may still be filled)
    frames_without_face: int = 0        # nothing pasted: written as the input frame
    seconds: float = 0.0
    notes: List[str] = field(default_factory=list)

    def describe(self, aligned: bool) -> str:
        speed = self.frames / self.seconds if self.seconds > 0 else 0.0
        lines = [f"{self.input} -> {self.output}",
                 f"  {self.frames} frames in {self.seconds:.1f} s ({speed:.2f} frames/s)"]
        if not aligned:
            lines.append(f"  {self.detections} faces detected, {self.tracks} track(s); "
                         f"{self.frames_without_detection} frames without a detection, "
                         f"{self.frames_without_face} frames left without a restored face")
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)


@dataclass
class _Face:
    matrix: Optional[np.ndarray]       # (2, 3) frame -> 512 crop; None in aligned mode
    crop: np.ndarray                   # (n, n, 3) uint8 network input
    restored: Optional[np.ndarray] = None


@dataclass
class _Slot:
    frame: Frame
    faces: Dict[int, _Face] = field(default_factory=dict)
    detected: bool = False


class _Track:
    def __init__(self, track_id: int, start: int, max_gap: int, sigma: float):
        self.id = track_id
        self.start = start
        self.next_frame = start          # next frame whose smoothed landmarks are due
        self.gaps = GapFiller(max_gap)
        self.smoother = StreamingGaussian(sigma)
        self.window: List[int] = []      # frames cropped, waiting for the network


class VideoRestorer:
    """Loads the models once and restores any number of inputs with :meth:`run`."""

    def __init__(self, options: RestoreOptions, net: Optional[torch.nn.Module] = None):
        from keep.api import load_model
        self.options = options
        self.device = resolve_device(options.device)
        if options.window < 1:
            raise ValueError("--window must be at least 1")
        if options.upscale < 1:
            raise ValueError("--upscale must be an integer >= 1")
        if options.fps is not None and options.fps <= 0:
            raise ValueError(f"--fps must be positive, got {options.fps}")
        self.net = net if net is not None else load_model(options.weights, device=self.device)
        self.restorer = FaceRestorer(self.net, self.device, options.precision, options.reset_state_per_window,
                                     propagate=not options.image_baseline)
        self.notes: List[str] = []
        self.detector: Optional[FaceDetector] = None
        self.paster: Optional[FacePaster] = None
        self.upsampler = None
        if options.face_upsample and options.upscale == 1:
            self.notes.append("--face-upsample has no effect with --upscale 1")
        if options.bg_upsampler or (options.face_upsample and options.upscale > 1):
            from keep.restore.upsampler import RealESRGANUpsampler
            self.upsampler = RealESRGANUpsampler(self.device, tile=options.bg_tile,
                                                 half=options.precision == "fp16")
        if not options.aligned:
            self.detector = make_detector(options.detector, self.device)
            self.paster = FacePaster(options.upscale, self._parse_masker(), options.draw_box)

    def _parse_masker(self):
        if self.options.mask == "square":
            return None
        from keep.face.parsing import ParseMasker
        try:
            return ParseMasker(self.device, download=self.options.mask == "parse")
        except WeightsNotFoundError:
            if self.options.mask == "parse":
                raise
            self.notes.append("face parsing weights absent: feathered square mask used "
                              "(`keep download parsenet` for the release's parsing mask)")
            return None

    def output_path(self, name: str) -> Path:
        return Path(self.options.output_dir) / f"{name}.mp4"

    def run(self, path: Path, on_frame: Optional[Callable[[RunSummary, Optional[int]], None]] = None) -> RunSummary:
        """Restore one input (video file or frame folder) to ``<output_dir>/<name>.mp4``.

        ``on_frame(summary, total)`` (optional) is called after each written frame with the running
        summary and the header's frame count (None if unknown); an exception it raises stops the run
        and deletes the partial videos (how ``keep demo`` shows progress and cancels)."""
        source = open_source(path, self.options.fps)
        try:
            return _Run(self, source, on_frame).execute()
        finally:
            source.close()


class _Run:
    """The streaming state of one input."""

    def __init__(self, owner: VideoRestorer, source, on_frame=None):
        self.o = owner.options
        self.on_frame = on_frame
        self.owner = owner
        self.source = source
        self.info: SourceInfo = source.info
        self.size = owner.restorer.size
        self.radius = StreamingGaussian(self.o.sigma).radius
        self.buffer: Deque[_Slot] = deque()
        self.tracks: Dict[int, _Track] = {}
        self.tracker = FaceTracker(all_faces=self.o.all_faces)
        self.seen = 0
        self.eof = False
        out = owner.output_path(self.info.name)
        self.summary = RunSummary(input=self.info.path, output=out, notes=list(owner.notes))
        self.extra_dir = Path(self.o.output_dir) / self.info.name
        self.writer: Optional[VideoWriter] = None
        self.compare: Optional[VideoWriter] = None

    # ------------------------------------------------------------------ set-up
    def _open_writers(self) -> None:
        o, info = self.o, self.info
        out = self.summary.output
        compare_path = out.with_name(f"{info.name}_compare.mp4")
        for path in [out] + ([compare_path] if o.compare else []):
            if path.exists() and not o.overwrite:
                raise InputError(f"{path} already exists; pass --overwrite to replace it")
        if o.aligned:
            self.out_w = self.out_h = self.size
            if info.width != info.height:
                self.summary.notes.append(f"aligned input {info.width}x{info.height} is not square: "
                                          f"resized to {self.size}x{self.size}")
        else:
            self.out_w, self.out_h = info.width * o.upscale, info.height * o.upscale
        fps, time_base = info.fps, info.time_base
        audio = info.path if info.has_audio else None
        if o.fps is not None and info.kind == "video":
            time_base = 1 / Fraction(o.fps)   # frames re-timed: index / fps
            if audio is not None:
                self.summary.notes.append("audio not copied: --fps changes the video's timing")
                audio = None
        self.retime = o.fps is not None and info.kind == "video"
        self.writer = VideoWriter(out, self.out_w, self.out_h, fps, time_base, audio_from=audio, crf=o.crf,
                                  color=info.color)
        if self.writer.padded:
            self.summary.notes.append(f"odd size {self.out_w}x{self.out_h}: padded by one pixel to even "
                                      f"(H.264 yuv420p needs even sizes)")
        if self.writer.audio is not None:
            self.summary.notes.append(f"audio: {self.writer.audio.description}")
        if o.compare:
            self.compare = VideoWriter(compare_path, 2 * self.out_w, self.out_h, fps, time_base, crf=o.crf,
                                       color=info.color)

    # ------------------------------------------------------------------ main loop
    def execute(self) -> RunSummary:
        started = time.perf_counter()
        self._open_writers()
        try:
            bar = tqdm(self.source, total=self.info.frame_count, unit="frame", desc=self.info.name,
                       disable=not self.o.progress)
            for frame in bar:
                self._push(frame)
                self._release()
            self.eof = True
            self._finish_tracks()
            self._release()
            if self.summary.frames == 0:
                raise InputError(f"{self.info.path}: no frames could be decoded")
            if not self.o.aligned and self.summary.tracks == 0:
                raise InputError(f"{self.info.path}: no face found in any of its {self.summary.frames} frames; "
                                 f"try --detector retinaface (dlib misses small and turned faces), or "
                                 f"--aligned if the frames are already aligned face crops")
            self.writer.close()
            if self.compare is not None:
                self.compare.close()
        except BaseException:
            self.writer.abort()
            if self.compare is not None:
                self.compare.abort()
            raise
        self.summary.seconds = time.perf_counter() - started
        self.summary.notes += [n for n in self.info.notes if n not in self.summary.notes]
        return self.summary

    def _slot(self, index: int) -> _Slot:
        return self.buffer[index - self.buffer[0].frame.index]

    def _push(self, frame: Frame) -> None:
        slot = _Slot(frame)
        self.buffer.append(slot)
        self.seen = frame.index + 1
        if self.o.aligned:
            image = frame.image
            if image.shape[:2] != (self.size, self.size):
                image = cv2.resize(image, (self.size, self.size), interpolation=cv2.INTER_LINEAR)
            slot.faces[0] = _Face(None, image)
            if 0 not in self.tracks:
                self.tracks[0] = _Track(0, frame.index, self.o.max_gap, self.o.sigma)
            track = self.tracks[0]
            track.window.append(frame.index)
            track.next_frame = frame.index + 1
            if len(track.window) == self.o.window:
                self._restore_window(track)
            return
        detections = self.owner.detector.detect(frame.image)
        slot.detected = bool(detections)
        self.summary.detections += len(detections)
        self.summary.frames_without_detection += not detections
        assigned = self.tracker.update(detections, self.info.width, self.info.height)
        t = frame.index
        first_faces = self.summary.tracks == 0
        for tid, det in assigned.items():
            if tid in self.tracks:
                continue
            # The clip's first face(s), when seen near its start, are held back to frame 0 (np.interp's
            # constant extrapolation in the release); frames 0..t-1 are still buffered (see _release).
            start = 0 if first_faces and t <= self.o.max_gap else t
            track = self.tracks[tid] = _Track(tid, start, self.o.max_gap, self.o.sigma)
            self.summary.tracks += 1
            for _ in range(start, t):
                self._on_smoothed(track, track.smoother.push(det.landmarks))
        for tid, track in list(self.tracks.items()):
            det = assigned.get(tid)
            for _, landmarks in track.gaps.push(t, None if det is None else det.landmarks):
                self._on_smoothed(track, track.smoother.push(landmarks))
            if track.gaps.lost:
                self._end_track(track)

    def _on_smoothed(self, track: _Track, values: List[np.ndarray]) -> None:
        for landmarks in values:
            slot = self._slot(track.next_frame)
            matrix = align_matrix(landmarks.reshape(5, 2))
            crop = warp_face(slot.frame.image, crop_matrix(matrix, self.size), self.size)
            slot.faces[track.id] = _Face(matrix, crop)
            track.window.append(track.next_frame)
            track.next_frame += 1
            if len(track.window) == self.o.window:
                self._restore_window(track)

    def _restore_window(self, track: _Track) -> None:
        if not track.window:
            return
        faces = [self._slot(i).faces[track.id] for i in track.window]
        restored = self.owner.restorer.restore(track.id, [f.crop for f in faces])
        for face, image in zip(faces, restored):
            face.restored = image
        track.window = []

    def _end_track(self, track: _Track) -> None:
        self._on_smoothed(track, track.smoother.finish())
        self._restore_window(track)
        self.owner.restorer.end_track(track.id)
        self.tracker.drop(track.id)
        del self.tracks[track.id]

    def _finish_tracks(self) -> None:
        for track in list(self.tracks.values()):
            if not self.o.aligned:
                for _, landmarks in track.gaps.finish():
                    self._on_smoothed(track, track.smoother.push(landmarks))
            self._end_track(track)

    # ------------------------------------------------------------------ output
    def _release(self) -> None:
        """Write every frame at the head of the buffer that no track can still change."""
        while self.buffer:
            slot = self.buffer[0]
            index = slot.frame.index
            if not self.eof:
                if not self.o.aligned and self.seen <= self.o.max_gap:
                    return  # a track found later may still be held back to frame 0
                if any(t.start <= index and t.next_frame <= index for t in self.tracks.values()):
                    return
            if any(f.restored is None for f in slot.faces.values()):
                return
            self.buffer.popleft()
            self._emit(slot)

    def _background(self, image: np.ndarray) -> np.ndarray:
        scale = self.o.upscale
        if self.owner.upsampler is not None and self.o.bg_upsampler:
            up = self.owner.upsampler.enhance(image)
            return cv2.resize(up, (self.out_w, self.out_h), interpolation=cv2.INTER_LANCZOS4).astype(np.float32)
        if scale == 1:
            return image.astype(np.float32)
        return cv2.resize(image, (self.out_w, self.out_h), interpolation=cv2.INTER_LINEAR).astype(np.float32)

    def _emit(self, slot: _Slot) -> None:
        frame = slot.frame
        index = frame.index
        self.summary.frames += 1
        if self.o.aligned:
            output = slot.faces[0].restored
            reference = slot.faces[0].crop
        else:
            canvas = self._background(frame.image)
            gray = (np.array_equal(frame.image[..., 0], frame.image[..., 1])
                    and np.array_equal(frame.image[..., 1], frame.image[..., 2]))
            for tid in sorted(slot.faces):
                restored = slot.faces[tid].restored
                if gray:
                    restored = gray_face(restored)
                face, face_512 = restored, None
                if self.o.face_upsample and self.o.upscale > 1 and self.owner.upsampler is not None:
                    side = FACE_SIZE * self.o.upscale
                    face_512 = cv2.resize(restored, (FACE_SIZE, FACE_SIZE), interpolation=cv2.INTER_LINEAR)
                    face = cv2.resize(self.owner.upsampler.enhance(restored), (side, side),
                                      interpolation=cv2.INTER_LANCZOS4)
                self.owner.paster.paste(canvas, face, slot.faces[tid].matrix, face_512)
            output = to_uint8(canvas)
            reference = frame.image
            if self.o.upscale > 1:
                reference = cv2.resize(reference, (self.out_w, self.out_h), interpolation=cv2.INTER_LINEAR)
            self.summary.frames_without_face += not slot.faces
        pts = index if self.retime else frame.pts
        self.writer.write(output, pts)
        if self.compare is not None:
            self.compare.write(np.concatenate([reference, output], axis=1), pts)
        for tid, face in slot.faces.items():
            name = f"{index:08d}.png" if self.o.aligned else f"{index:08d}_{tid:02d}.png"
            if self.o.save_faces:
                write_image(self.extra_dir / "restored_faces" / name, face.restored)
            if self.o.save_cropped:
                write_image(self.extra_dir / "cropped_faces" / name, face.crop)
        if self.o.save_frames:
            write_image(self.extra_dir / "final_frames" / f"{index:08d}.png", output)
        if self.on_frame is not None:
            self.on_frame(self.summary, self.info.frame_count)
