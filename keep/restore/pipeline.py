"""Streaming restoration of one input: decode -> detect -> track -> smooth -> restore -> paste -> encode.

Faces come from the one face pipeline, :class:`keep.face.tracks.FaceTracks` (tracking, gap filling,
smoothing, alignment), fed with shot boundaries (:class:`keep.face.shots.Shots`): a boundary ends
every track, so each shot is restored as if alone. Frames wait in a buffer only until every track
that may cover them has its smoothed landmarks (look-ahead: ``max_gap`` for gap filling + the
smoothing radius) and its window has been through the network, so memory is bounded by
``max_gap + radius + window`` frames plus the shot detector's look-ahead (22-32 frames), not by the
video's length (the release decodes the whole video and stacks every crop on the GPU).

Overlap (keep/restore/stages.py): decoding runs in a thread a few frames ahead, the network in a
second thread, paste-back + encoding in a third; the main thread detects, tracks, smooths and
aligns. Each hand-over is a bounded queue, so memory stays bounded by the window and the
look-ahead (plus ``2 * window`` frames waiting for paste-back and a few decoded ahead). Which
windows go through the network together, and in which order, is decided by the main thread alone,
so the output is byte-identical with and without overlap (``overlap=False`` runs every stage
inline).

Windows of all tracks end on one grid (frames ``k * window - 1``), so the windows of faces that
are due at the same frame go through the network as one batch (keep/restore/batching.py); a track
that starts mid-window has a shorter first window. On a GPU the crops and the paste-back run on
the device (keep/restore/device_geometry.py).
"""
from __future__ import annotations

import dataclasses
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Callable, Deque, Dict, List, Optional, Tuple

import cv2
import numpy as np
import torch

from keep.face.align import FACE_SIZE, crop_matrix, warp_face
from keep.face.detect import FaceDetector, make_detector
from keep.face.paste import FacePaster, gray_face, to_uint8
from keep.face.shots import Shots
from keep.face.smoothing import StreamingGaussian
from keep.face.tracks import FaceReady, FaceTracks, TrackEnded, TrackStarted
from keep.io.errors import InputError
from keep.io.images import write_image
from keep.io.source import Frame, SourceInfo, open_source
from keep.io.writer import VideoWriter, needs_deep_output
from keep.restore import device_geometry
from keep.restore.batching import BatchRestorer, Crop, default_max_batch
from keep.restore.frame_spill import GIB, FrameSpill, default_budget
from keep.restore.options import RestoreOptions
from keep.restore.progress import RunProgress, default_window
from keep.restore.window_tag import window_tags
from keep.restore.restorer import resolve_device
from keep.restore.stages import Stage, StageError, prefetch
from keep.weights import WeightsNotFoundError


HOST_QUEUE_BYTES = 2 ** 30   # frames waiting between the stages (paste-back queue, decoded ahead), at most


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
    frames_face_left: int = 0           # ... although a face was detected in it (too small, not followed)
    small_faces: int = 0                # detections under --min-face, left untouched
    cuts: List[int] = field(default_factory=list)   # first frames of the shots after the first
    shots: str = "auto"
    seconds: float = 0.0
    notes: List[str] = field(default_factory=list)

    def describe(self, aligned: bool) -> str:
        speed = self.frames / self.seconds if self.seconds > 0 else 0.0
        lines = [f"{self.input} -> {self.output}",
                 f"  {self.frames} frames in {self.seconds:.1f} s ({speed:.2f} frames/s)"]
        if not aligned:
            left = (f" ({self.frames_face_left} of them with a face detected: too small or not followed)"
                    if self.frames_face_left else "")
            lines.append(f"  {self.detections} faces detected, {self.tracks} track(s); "
                         f"{self.frames_without_detection} frames without a detection, "
                         f"{self.frames_without_face} frames left without a restored face{left}")
            if self.small_faces:
                lines.append(f"  {self.small_faces} faces smaller than --min-face left untouched")
        if self.shots != "off":
            shown = ", ".join(str(c) for c in self.cuts[:20]) + (", ..." if len(self.cuts) > 20 else "")
            lines.append(f"  {len(self.cuts) + 1} shot(s)" + (f"; cuts before frames {shown}" if self.cuts else
                                                               "; no cut found"))
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)


@dataclass
class _Face:
    matrix: Optional[np.ndarray]       # (2, 3) frame -> 512 crop; None in aligned mode
    crop: Optional[Crop] = None        # (n, n, 3) uint8 network input (numpy, or a tensor on the device)
    job: Optional["_Job"] = None       # the network call that restores it, once its window is sent
    restored: Optional[Crop] = None    # set by the network stage before job.done is set


@dataclass
class _Slot:
    frame: Frame
    faces: Dict[int, _Face] = field(default_factory=dict)
    detected: bool = False
    on_device: Optional[torch.Tensor] = None   # the frame uploaded once (device geometry)


@dataclass
class _Job:
    """Windows of several tracks restored in one network call (one length, all fresh or all carried)."""
    windows: List[Tuple[int, List[_Face]]]
    done: Future = field(default_factory=Future)


@dataclass
class _EndTrack:
    track: int


class _Track:
    """A face track's place in the network schedule (its landmarks live in keep.face.tracks)."""

    def __init__(self, track_id: int, start: int, shot_start: int):
        self.id = track_id
        self.start = start
        self.shot_start = shot_start     # windows end on a grid counted from the shot's first frame
        self.next_frame = start          # next frame whose face is due
        self.window: List[int] = []      # frames cropped, waiting for the network
        self.windows_sent = 0


class VideoRestorer:
    """Loads the models once and restores any number of inputs with :meth:`run`."""

    def __init__(self, options: RestoreOptions, net: Optional[torch.nn.Module] = None):
        from keep.api import load_model
        self.options = options
        self.notes: List[str] = []
        self.device = resolve_device(options.device) if options.backend == "torch" else torch.device("cpu")
        if options.window is None:   # the rule: keep/restore/progress.py (first frame out within about a minute)
            options = self.options = dataclasses.replace(options, window=default_window(self.device))
        if options.window < 1:
            raise ValueError("--window must be at least 1")
        if options.upscale < 1:
            raise ValueError("--upscale must be an integer >= 1")
        if options.fps is not None and options.fps <= 0:
            raise ValueError(f"--fps must be positive, got {options.fps}")
        precision = options.precision
        if net is None and options.backend != "torch":   # the network runs in onnxruntime / OpenVINO
            from keep.deploy.network import load_network
            net, note = load_network(options.weights, options.backend, options.device, precision)
            self.notes.append(note)
            precision = "fp32"   # the runtime's precision is the network's; the pipeline's tensors stay fp32
        self.net = net if net is not None else load_model(options.weights, device=self.device)
        # CI forces the GPU code path on CPU tensors (device_geometry.device_path_forced)
        self.forced_device_path = device_geometry.device_path_forced(options.device_path)
        max_batch = options.max_batch or default_max_batch(self.device, int(self.net.img_size), options.window)
        self.restorer = BatchRestorer(self.net, self.device, precision, options.reset_state_per_window,
                                      propagate=not options.image_baseline, cpu_autocast=self.forced_device_path,
                                      max_batch=max_batch)
        if options.all_faces:
            self.notes.append(f"at most {max_batch} faces per network call"
                              f"{' (--max-batch)' if options.max_batch else ' (from free memory; --max-batch)'}")
        self.detector: Optional[FaceDetector] = None
        self.paster: Optional[FacePaster] = None
        self.upsampler = None
        if options.face_upsample and options.upscale == 1:
            self.notes.append("--face-upsample has no effect with --upscale 1")
        if options.bg_upsampler or (options.face_upsample and options.upscale > 1):
            from keep.restore.upsampler import RealESRGANUpsampler
            self.upsampler = RealESRGANUpsampler(self.device, tile=options.bg_tile,
                                                 half=options.precision == "fp16")
        # crops and paste-back where the network runs, when it is not the CPU (there OpenCV is faster);
        # Real-ESRGAN on the face and the drawn box stay on the OpenCV path
        self.device_geometry = ((self.device.type != "cpu" or self.forced_device_path) and not options.aligned
                                and not options.face_upsample and not options.draw_box)
        self.device_paster: Optional[device_geometry.DevicePaster] = None
        if not options.aligned:
            self.detector = make_detector(options.detector, self.device)
            masker = self._parse_masker()
            self.paster = FacePaster(options.upscale, masker, options.draw_box)
            self.device_paster = device_geometry.DevicePaster(options.upscale, masker)

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

    def run(self, path: Path, name: Optional[str] = None,
            on_frame: Optional[Callable[[RunSummary, Optional[int]], None]] = None,
            extras_dir: Optional[Path] = None) -> RunSummary:
        """Restore one input (video file or frame folder) to ``<output_dir>/<name>.mp4``.

        ``on_frame(summary, total)`` (optional) is called after each written frame with the running
        summary and the header's frame count (None if unknown); an exception it raises stops the run
        and deletes the partial videos (how ``keep demo`` shows progress and cancels). ``extras_dir``: where
        --save-faces and friends write (default ``<output_dir>/<name>``; keep restore stages them)."""
        source = open_source(path, self.options.fps, self.options.stream)
        source.info.name = name or source.info.name   # a batch may rename (x.mp4 + x.mkv)
        try:
            run = _Run(self, source)
            run.on_frame = on_frame
            if extras_dir is not None:
                run.extra_dir = Path(extras_dir)
            return run.execute()
        finally:
            source.close()


class _Run:
    """The streaming state of one input."""

    def __init__(self, owner: VideoRestorer, source):
        self.o = owner.options
        self.on_frame: Optional[Callable[[RunSummary, Optional[int]], None]] = None   # set by run()
        self.owner = owner
        self.source = source
        self.info: SourceInfo = source.info
        self.size = owner.restorer.size
        self.radius = StreamingGaussian(self.o.sigma).radius
        self.buffer: Deque[_Slot] = deque()
        self.tracks: Dict[int, _Track] = {}
        self.faces = FaceTracks(all_faces=self.o.all_faces, max_gap=self.o.max_gap, sigma=self.o.sigma,
                                min_face=self.o.min_face)
        self.shots = Shots(self.o.shots)
        self.shot_start = 0
        self.next_track_id = 0           # aligned mode: one track per shot
        self.seen = 0
        self.eof = False
        self.due: List[Tuple[int, List[int], bool]] = []  # (track, frames, carried) due in this step, not sent
        self.ended: List[int] = []                       # tracks ended in this step
        out = owner.output_path(self.info.name)
        self.summary = RunSummary(input=self.info.path, output=out, notes=list(owner.notes), shots=self.o.shots)
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
        deep = needs_deep_output(info.bit_depth, info.color)   # 10-bit out for >8-bit or HDR in
        self.writer = VideoWriter(out, self.out_w, self.out_h, fps, time_base, audio_from=audio, crf=o.crf,
                                  color=info.color, deep=deep, tags=window_tags(o.window), hdr10=info.hdr10)
        self.summary.notes.append(f"output: {self.writer.description}")
        if self.writer.padded:
            self.summary.notes.append(f"odd size {self.out_w}x{self.out_h}: padded by one pixel to even "
                                      f"(H.264 yuv420p needs even sizes)")
        if self.writer.audio is not None:
            self.summary.notes.append(f"audio: {self.writer.audio.description}")
        if o.compare:
            self.compare = VideoWriter(compare_path, 2 * self.out_w, self.out_h, fps, time_base, audio_from=audio,
                                       crf=o.crf, color=info.color, deep=deep, hdr10=info.hdr10)

    # ------------------------------------------------------------------ main loop
    def execute(self) -> RunSummary:
        started = time.perf_counter()
        o = self.o
        # On the CPU the network already uses every core: stage threads beside it only oversubscribe
        # them (measured: 0.149 vs 0.188 frames/s with the real network, 2 cores), so "auto" overlaps
        # only when the network runs on a GPU.
        threaded = o.overlap if o.overlap is not None else (self.owner.device.type != "cpu"
                                                            or self.owner.forced_device_path)
        self.on_device = self.owner.device_geometry
        self.progress = RunProgress(self.owner.net, self.info.name, self.info.frame_count, o.progress,
                                    lambda: self.summary.detections / max(self.seen, 1) if o.all_faces else 1.0)
        # Bounded hand-overs: one window running and one queued in the network, two windows of frames
        # waiting for paste-back, a few frames decoded ahead.
        self.network = Stage("network", self._run_job, maxsize=2, threaded=threaded, discard=self._cancel_job)
        # ... bounded in bytes too (HOST_QUEUE_BYTES): at 8K two windows of frames would be gigabytes
        frame_bytes = self.info.width * self.info.height * 3 * (2 if self.info.bit_depth > 8 else 1)
        queued = int(max(2, min(2 * o.window, HOST_QUEUE_BYTES // max(frame_bytes, 1))))
        self.emitter = Stage("paste-back and encoding", self._emit, maxsize=queued, threaded=threaded)
        budget = default_budget() if o.frame_memory is None else int(o.frame_memory * GIB)
        self.spill = FrameSpill(budget, self.summary.output.parent)
        decoded = self.spill.admit_all(_owned(self.source) if threaded else self.source)
        frames = prefetch(decoded, size=min(8, queued), threaded=threaded)
        try:
            self._open_writers()   # inside: if the compare file cannot be made, the main one goes too
            for frame, cut in self.shots.annotate(frames):
                self._push(frame, cut)
                self.progress.decoded()
                self._flush()
                self._release()
            self.eof = True
            self._finish_tracks()
            self._flush()
            self._release()
            self.network.close()
            self.emitter.close()
            if self.summary.frames == 0:
                raise InputError(f"{self.info.path}: no frames could be decoded")
            if not self.o.aligned and self.summary.tracks == 0 and self.summary.small_faces:
                raise InputError(f"{self.info.path}: every face found is smaller than --min-face "
                                 f"{self.o.min_face:g} px ({self.summary.small_faces} faces); lower --min-face "
                                 f"(0 restores every face found)")
            if not self.o.aligned and self.summary.tracks == 0:
                raise InputError(f"{self.info.path}: no face found in any of its {self.summary.frames} frames; "
                                 f"try --detector retinaface (dlib misses small and turned faces), or "
                                 f"--aligned if the frames are already aligned face crops")
            # all or nothing: both videos are finished (where a full disk fails) before either is renamed
            writers = [w for w in (self.writer, self.compare) if w is not None]
            for writer in writers:
                writer.finish()
            for writer in writers:
                writer.commit()
        except BaseException:
            frames.close()
            self.network.abort()
            self.emitter.abort()
            self._abort_writers()
            raise
        finally:
            self.progress.close()
            self._let_go()
        self.summary.seconds = time.perf_counter() - started
        self.summary.notes += [n for n in self.info.notes if n not in self.summary.notes]
        spilled = self.spill.describe()
        if spilled:
            self.summary.notes.append(spilled)
        return self.summary

    def _let_go(self) -> None:
        """Break the run's reference cycles (its stages and progress bar call back into it) so the
        decoder, the encoders and their codec threads are freed when the run returns, not at some
        later garbage collection: a folder of clips would otherwise hold every clip's x264 and
        decoder threads and buffers at once (47 threads after 5 clips, measured with gc off)."""
        self.network = self.emitter = self.progress = None
        self.writer = self.compare = None
        self.source = None

    def _abort_writers(self) -> None:
        for writer in (self.writer, self.compare):
            if writer is not None:
                writer.abort()

    def _slot(self, index: int) -> _Slot:
        return self.buffer[index - self.buffer[0].frame.index]

    def _push(self, frame: Frame, cut: bool = False) -> None:
        slot = _Slot(frame)
        self.buffer.append(slot)
        self.seen = frame.index + 1
        if cut:
            self.shot_start = frame.index
        if self.o.aligned:
            image = frame.image
            if image.shape[:2] != (self.size, self.size):
                image = cv2.resize(image, (self.size, self.size), interpolation=cv2.INTER_LINEAR)
            if cut and self.tracks:   # a new shot: a new track with a fresh state
                self._end_track(self.tracks[self.next_track_id - 1])
            if not self.tracks:
                tid = self.next_track_id
                self.next_track_id += 1
                self.tracks[tid] = _Track(tid, frame.index, self.shot_start)
            track = next(iter(self.tracks.values()))
            slot.faces[track.id] = _Face(None, image)
            track.window.append(frame.index)
            track.next_frame = frame.index + 1
            self._window_due(track)
            return
        detections = self.owner.detector.detect(frame.image)
        slot.detected = bool(detections)
        self.summary.detections += len(detections)
        self.summary.frames_without_detection += not detections
        self._on_events(self.faces.push(frame.index, frame.image, detections, cut=cut))
        self.summary.small_faces = self.faces.small_faces

    def _on_events(self, events: list) -> None:
        """Consume keep.face.tracks events: faces to crop, windows to send, tracks to free."""
        for event in events:
            if isinstance(event, TrackStarted):
                self.tracks[event.track] = _Track(event.track, event.frame, self.shot_start)
                self.summary.tracks += 1
            elif isinstance(event, FaceReady):
                track = self.tracks[event.track]
                self._slot(event.frame).faces[track.id] = _Face(event.matrix)
                track.window.append(event.frame)
                track.next_frame = event.frame + 1
                self._window_due(track)
            elif isinstance(event, TrackEnded):
                self._end_track(self.tracks[event.track])

    # ------------------------------------------------------------------ network
    def _window_due(self, track: _Track) -> None:
        """A window is due when full or at a grid line, ``next_frame % window == 0``, the same for every track."""
        if track.window and (len(track.window) == self.o.window
                             or (track.next_frame - track.shot_start) % self.o.window == 0):
            self._send_window(track)

    def _send_window(self, track: _Track) -> None:
        carried = track.windows_sent > 0 and self.owner.restorer.propagate and not self.o.reset_state_per_window
        self.due.append((track.id, track.window, carried))
        track.window = []
        track.windows_sent += 1

    def _flush(self) -> None:
        """Send the windows that fell due in this step. Windows of one length and one state kind (fresh or
        carried) go as one batch; a track's k-th window of the step goes in round k, after its earlier ones."""
        groups: Dict[Tuple[int, int, bool], List[Tuple[int, List[int]]]] = {}
        rounds: Dict[int, int] = {}
        for track_id, indices, carried in self.due:
            round_ = rounds[track_id] = rounds.get(track_id, -1) + 1
            groups.setdefault((round_, len(indices), carried), []).append((track_id, indices))
        self.due = []
        for key in sorted(groups, key=lambda k: k[0]):  # stable: first-seen order within a round
            windows = [(tid, [self._slot(i).faces[tid] for i in indices]) for tid, indices in groups[key]]
            self._make_crops(groups[key], windows)
            job = _Job(windows)
            for _, faces in windows:
                for face in faces:
                    face.job = job
            try:
                self.network.put(job)
            except BaseException:
                self._cancel_job(job)
                raise
        for track_id in self.ended:
            self.network.put(_EndTrack(track_id))
        self.ended = []

    def _make_crops(self, frames: List[Tuple[int, List[int]]], windows: List[Tuple[int, List[_Face]]]) -> None:
        if self.o.aligned:
            return  # the resized frame is the crop
        for (_, indices), (_, faces) in zip(frames, windows):
            slots = [self._slot(i) for i in indices]
            matrices = [crop_matrix(f.matrix, self.size) for f in faces]
            if self.on_device:  # the window's crops in one grid_sample
                crops = device_geometry.crop_faces([self._on_device(s) for s in slots], matrices, self.size)
                for face, crop in zip(faces, crops):
                    face.crop = crop
            else:
                for face, slot, matrix in zip(faces, slots, matrices):
                    face.crop = warp_face(slot.frame.image, matrix, self.size)

    def _on_device(self, slot: _Slot) -> torch.Tensor:
        if slot.on_device is None:
            slot.on_device = device_geometry.upload(slot.frame.image, self.owner.device)
        return slot.on_device

    def _run_job(self, item) -> None:
        """Network stage: one batched call, or the end of a track (its Kalman state freed)."""
        if isinstance(item, _EndTrack):
            self.owner.restorer.end_track(item.track)
            return
        restored = self.owner.restorer.restore_many([(tid, [f.crop for f in faces]) for tid, faces in item.windows])
        for (_, faces), images in zip(item.windows, restored):
            for face, image in zip(faces, images):
                face.restored = image
        item.done.set_result(True)

    @staticmethod
    def _cancel_job(item) -> None:
        if isinstance(item, _Job) and not item.done.done():
            item.done.set_exception(StageError("the network stage stopped before this window"))

    def _end_track(self, track: _Track) -> None:
        if track.window:
            self._send_window(track)
        self.ended.append(track.id)
        del self.tracks[track.id]

    def _finish_tracks(self) -> None:
        if self.o.aligned:
            for track in list(self.tracks.values()):
                self._end_track(track)
        else:
            self._on_events(self.faces.finish())
        self.summary.cuts = list(self.shots.cuts)

    # ------------------------------------------------------------------ output
    def _release(self) -> None:
        """Hand every frame at the head of the buffer that no track can still change to paste-back."""
        while self.buffer:
            slot = self.buffer[0]
            index = slot.frame.index
            if not self.eof:
                if self.o.aligned:
                    if any(t.next_frame <= index for t in self.tracks.values()):
                        return
                else:
                    pending = self.faces.pending_from   # a track may still give this frame a face
                    if pending is not None and pending <= index:
                        return
            if any(f.job is None for f in slot.faces.values()):
                return
            self.buffer.popleft()
            self.emitter.put(slot)

    def _background(self, frame: Frame) -> np.ndarray:
        """The canvas: the frame as float32 in 0..255 units (a >8-bit frame's levels kept as fractions)."""
        scale = self.o.upscale
        image = frame.image if frame.deep is None else frame.deep.astype(np.float32) / 257.0
        if self.owner.upsampler is not None and self.o.bg_upsampler:
            image = frame.image   # Real-ESRGAN works on 8 bits
            up = self.owner.upsampler.enhance(image)
            return cv2.resize(up, (self.out_w, self.out_h), interpolation=cv2.INTER_LANCZOS4).astype(np.float32)
        if scale == 1:
            return image.astype(np.float32)
        return cv2.resize(image, (self.out_w, self.out_h), interpolation=cv2.INTER_LINEAR).astype(np.float32)

    def _compose(self, slot: _Slot, gray: bool) -> np.ndarray:
        """The output frame: restored faces pasted into the background (OpenCV)."""
        canvas = self._background(slot.frame)
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
        return to_uint8(canvas) if slot.frame.deep is None else _to_uint16(canvas)

    def _compose_on_device(self, slot: _Slot, gray: bool) -> np.ndarray:
        """:meth:`_compose` with device tensors (keep/restore/device_geometry.py); one download per frame."""
        if self.o.upscale == 1 and not self.o.bg_upsampler and slot.frame.deep is None:
            canvas = self._on_device(slot).float()
        else:
            canvas = device_geometry.upload(self._background(slot.frame), self.owner.device)
        for tid in sorted(slot.faces):
            restored = slot.faces[tid].restored
            if gray:
                restored = device_geometry.gray_face(restored)
            self.owner.device_paster.paste(canvas, restored, slot.faces[tid].matrix)
        if slot.frame.deep is not None:
            return _to_uint16(canvas.cpu().numpy())
        return device_geometry.to_uint8(canvas).cpu().numpy()

    def _emit(self, slot: _Slot) -> None:
        """Paste-back and encoding stage: waits for the frame's faces, writes the frame, advances the bar."""
        for face in slot.faces.values():
            face.job.done.result()
        frame = slot.frame
        index = frame.index
        self.summary.frames += 1
        if self.o.aligned:
            face = next(iter(slot.faces.values()))   # one track per shot
            output = _numpy(face.restored)
            reference = face.crop
        else:
            gray = (np.array_equal(frame.image[..., 0], frame.image[..., 1])
                    and np.array_equal(frame.image[..., 1], frame.image[..., 2]))
            if slot.faces and self.on_device:
                output = self._compose_on_device(slot, gray)
            else:
                output = self._compose(slot, gray)
            reference = frame.image if frame.deep is None else frame.deep
            if self.o.upscale > 1:
                reference = cv2.resize(reference, (self.out_w, self.out_h), interpolation=cv2.INTER_LINEAR)
            self.summary.frames_without_face += not slot.faces
            self.summary.frames_face_left += slot.detected and not slot.faces
        slot.on_device = None
        pts = index if self.retime else frame.pts
        self.writer.write(output, pts)
        if self.compare is not None:
            self.compare.write(np.concatenate([reference, output], axis=1), pts)
        for tid, face in slot.faces.items():
            name = f"{index:08d}.png" if self.o.aligned else f"{index:08d}_{tid:02d}.png"
            if self.o.save_faces:
                write_image(self.extra_dir / "restored_faces" / name, _numpy(face.restored))
            if self.o.save_cropped:
                write_image(self.extra_dir / "cropped_faces" / name, _numpy(face.crop))
        if self.o.save_frames:
            write_image(self.extra_dir / "final_frames" / f"{index:08d}.png", output)
        self.spill.release(frame)
        # the frames bar counts frames written, i.e. restored; faces leaving the network move the second bar
        self.progress.written(len(slot.faces))
        if self.on_frame is not None:
            self.on_frame(self.summary, self.info.frame_count)


def _owned(frames):
    """Frames with their own pixels: a decoder's array may view a buffer it reuses once it runs ahead."""
    for frame in frames:
        frame.image = frame.image.copy()
        frame.deep = None if frame.deep is None else frame.deep.copy()
        yield frame


def _to_uint16(canvas: np.ndarray) -> np.ndarray:
    """A canvas in 0..255 units -> uint16 full scale (x 257): unchanged pixels get their input levels back."""
    return np.clip(np.rint(canvas * 257.0), 0, 65535).astype(np.uint16)


def _numpy(image: Crop) -> np.ndarray:
    return image.cpu().numpy() if torch.is_tensor(image) else image
