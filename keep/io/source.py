"""Frame sources: a video file (PyAV) or a folder of images, read one frame at a time.

A source never holds more than the frame being decoded, so memory does not grow with the length
of the input. Timestamps are kept as the container's exact rational time base, so the writer can
give the output the input's frame rate (or its exact timing, for variable-rate input).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Dict, Iterator, List, Optional

import av
import numpy as np
from av.video.reformatter import Interpolation


from keep.io.errors import InputError
from keep.io.hdr10 import Hdr10, read_hdr10
from keep.io.images import IMAGE_SUFFIXES, is_apple_double, list_frames, read_image
from keep.io.outputs import describe_input_kind

VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".webm")
DEFAULT_FOLDER_FPS = Fraction(20)  # the release's output rate, used only for frame folders without --fps
# swscale's default YUV <-> RGB path rounds down (about -1.2 levels per conversion, measured on the
# shared clips); accurate rounding with full chroma interpolation brings it to +-0.2.
ACCURATE = Interpolation.BILINEAR | Interpolation.ACCURATE_RND | Interpolation.FULL_CHR_H_INT


@dataclass
class Frame:
    """One decoded frame: ``image`` is (H, W, 3) uint8 RGB; ``pts`` counts ``time_base`` units.

    ``deep``: for a video of more than 8 bits, the frame as (H, W, 3) uint16 RGB (full scale 65535);
    ``image`` is then ``deep`` rounded to 8 bits (detection, alignment and the network work in 8 bits,
    the background keeps every bit)."""
    index: int
    image: np.ndarray
    pts: int
    time_base: Fraction
    deep: Optional[np.ndarray] = None


def to_8bit(deep: np.ndarray) -> np.ndarray:
    """uint16 (full scale 65535) -> uint8, rounded: x * 255 / 65535 = x / 257."""
    return ((deep.astype(np.uint32) + 128) // 257).astype(np.uint8)


def bit_depth(pix_fmt: str) -> int:
    """Bits per component of a pixel format (8 for an unknown one)."""
    try:
        return max(c.bits for c in av.VideoFormat(pix_fmt).components)
    except (ValueError, TypeError, av.error.FFmpegError):
        return 8


@dataclass
class SourceInfo:
    path: Path
    name: str                    # output stem: file stem, or folder name
    kind: str                    # "video" or "frames"
    width: int
    height: int
    fps: Fraction
    time_base: Fraction
    frame_count: Optional[int]   # from the container header; may be absent or approximate
    has_audio: bool
    notes: List[str] = field(default_factory=list)   # conversions the user should hear about
    color: Dict[str, int] = field(default_factory=dict)  # colorspace, color_primaries, color_trc tags
    stream: Optional[int] = None  # the container's index of the video stream read (None: a frame folder)
    bit_depth: int = 8            # bits per component of the input (frames of more than 8 carry ``deep``)
    hdr10: Optional[Hdr10] = None  # mastering display / light levels of an HDR10 input (keep/io/hdr10.py)

    def note(self, text: str) -> None:
        if text and text not in self.notes:
            self.notes.append(text)


class FrameSource:
    """Iterable of :class:`Frame`; ``info`` describes the input."""
    info: SourceInfo

    def __iter__(self) -> Iterator[Frame]:
        raise NotImplementedError

    def close(self) -> None:
        """Release the file handles (idempotent)."""

    def __enter__(self) -> "FrameSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def input_name(path: Path) -> str:
    """The output stem of an input: a video's file stem, a frame folder's name."""
    path = Path(path)
    return path.name if path.is_dir() else path.stem


def _display_matrix(frame: "av.VideoFrame") -> Optional[np.ndarray]:
    """The frame's DISPLAYMATRIX side data as 9 int32 (16.16 fixed point), or None."""
    for data in frame.side_data:
        if data.type == av.sidedata.sidedata.Type.DISPLAYMATRIX:
            return np.frombuffer(bytes(data), dtype=np.int32).astype(np.int64)
    return None


def _is_picture(stream) -> bool:
    """A cover image or thumbnail stored as a video stream (FFmpeg's attached_pic disposition)."""
    return bool(int(stream.disposition) & int(av.stream.Disposition.attached_pic))


def _count_packets(path: Path, streams) -> Dict[int, int]:
    """Packets (= frames for video) per stream, by demuxing without decoding (a second handle, so the
    caller's stays at the start). Only for files with several video streams and no counts in the header."""
    counts = {s.index: 0 for s in streams}
    with av.open(str(path)) as container:
        wanted = [container.streams[i] for i in counts]
        for packet in container.demux(*wanted):
            if packet.size:
                counts[packet.stream.index] += 1
    return counts


def choose_video_stream(container, path: Path, wanted: Optional[int] = None):
    """The video stream to restore: ``wanted`` (a container stream index, ``--stream``), else the one with
    the most frames, cover pictures (attached_pic) last, the default stream first among equals.

    Returns (stream, frames counted or None, a note for the summary or ""). A file whose first stream is
    a one-frame thumbnail must not be restored as that thumbnail (issue 20 item 5)."""
    videos = list(container.streams.video)
    def listing() -> str:
        return ", ".join(f"{s.index} ({s.codec_context.name}{', cover picture' if _is_picture(s) else ''})"
                         for s in videos)
    if wanted is not None:
        chosen = [s for s in videos if s.index == wanted]
        if not chosen:
            raise InputError(f"{path}: --stream {wanted} is not a video stream of this file; its video streams "
                             f"are {listing()}")
        note = f"video stream {wanted} restored (--stream) of {len(videos)} video streams" if len(videos) > 1 else ""
        return chosen[0], None, note
    if len(videos) == 1:
        return videos[0], None, ""
    candidates = [s for s in videos if not _is_picture(s)] or videos
    counts = {s.index: s.frames for s in candidates}
    counted = len(candidates) > 1 and not all(counts.values())
    if counted:
        counts = _count_packets(path, candidates)
    default = int(av.stream.Disposition.default)
    best = max(candidates, key=lambda s: (counts[s.index], bool(int(s.disposition) & default), -s.index))
    frames = ", ".join(f"{i}: {n}" for i, n in counts.items())
    note = (f"video stream {best.index} restored, the one with the most frames (frames per stream {frames}); "
            f"the file's video streams: {listing()}; --stream N restores another")
    return best, counts[best.index] if counted else None, note


class VideoSource(FrameSource):
    """Decode a video file with PyAV into RGB frames."""

    def __init__(self, path: Path, fps: Optional[Fraction] = None, stream_index: Optional[int] = None):
        self.path = Path(path)
        try:
            self._container = av.open(str(self.path))
        except (av.error.FFmpegError, OSError) as err:
            raise InputError(f"cannot open video {self.path}: {err}. Check that the file is a complete, "
                             f"playable video (mp4, mov, avi, mkv, webm).") from err
        if not self._container.streams.video:
            self._container.close()
            raise InputError(f"{self.path} has no video stream")
        try:
            stream, counted, choice = choose_video_stream(self._container, self.path, stream_index)
        except BaseException:
            self._container.close()
            raise
        stream.thread_type = "AUTO"
        self._stream = stream
        rate = stream.average_rate or stream.guessed_rate
        if fps is None and not rate:
            self._container.close()
            raise InputError(f"{self.path}: the container gives no frame rate; pass --fps")
        self.info = SourceInfo(
            path=self.path, name=input_name(self.path), kind="video", width=stream.codec_context.width,
            height=stream.codec_context.height, fps=Fraction(fps or rate),
            time_base=Fraction(stream.time_base) if stream.time_base else Fraction(1, 90000),
            frame_count=stream.frames or counted or None, has_audio=bool(self._container.streams.audio))
        self.info.note(choice)
        self.info.stream = stream.index
        context = stream.codec_context
        self.info.color = {k: int(getattr(context, k)) for k in ("colorspace", "color_primaries", "color_trc")}
        pix_fmt = context.pix_fmt or ""
        self.info.bit_depth = bit_depth(pix_fmt) if pix_fmt else 8
        if pix_fmt.startswith("gray") or pix_fmt.startswith("ya"):
            self.info.note("grayscale video converted to 3 channels")
        # The input's own rate: what a regular timeline advances by (``info.fps`` may be --fps).
        self._native_rate = Fraction(rate) if rate else self.info.fps
        self.retimed = fps is not None
        if self.retimed:
            self.info.note(f"frames re-timed at {self.info.fps} fps (--fps): the input's timestamps are not kept")
        # Decode the first frame now: a file that opens but cannot be decoded is reported before any
        # model is loaded, and its display matrix (phone videos) is known before the size is used.
        self._frames = self._container.decode(stream)
        self._first = self._decode_next(0)
        if self._first is None:
            self._container.close()
            raise InputError(f"{self.path}: no frame could be decoded; the file looks empty, corrupt or "
                             f"truncated. Re-encode or re-download it.")
        self.rotation = self._upright_turns(self._first)
        self.info.hdr10 = read_hdr10(self._first)
        if self.rotation % 2:
            self.info.width, self.info.height = self.info.height, self.info.width
        if self.rotation:
            turn = {1: "90 degrees counter-clockwise", 2: "180 degrees", 3: "90 degrees clockwise"}[self.rotation]
            self.info.note(f"rotated video: frames turned {turn} on decode (its display matrix), "
                           f"processed and written upright at {self.info.width}x{self.info.height}")

    def _decode_next(self, index: int) -> Optional["av.VideoFrame"]:
        try:
            return next(self._frames, None)
        except av.error.FFmpegError as err:
            self._container.close()
            raise InputError(f"{self.path}: decoding failed at frame {index} ({err}); the file looks "
                             f"corrupt or truncated. Re-encode or re-download it.") from err

    def _upright_turns(self, frame: "av.VideoFrame") -> int:
        """Quarter turns (counter-clockwise, ``np.rot90``'s k) that make the decoded pixels upright.

        Phones store the sensor's pixels and a display matrix (ISO/IEC 14496-12 ``tkhd``) saying how
        to turn them; players apply it (FFmpeg: ``theta = -av_display_rotation_get`` degrees clockwise),
        so the pipeline must too, or faces are sideways and the detector finds none. ``frame.rotation``
        is ``av_display_rotation_get``: the counter-clockwise angle the display applies.
        """
        matrix = _display_matrix(frame)
        if matrix is None:
            return 0
        a, b, c, d = matrix[0], matrix[1], matrix[3], matrix[4]
        angle = int(round(frame.rotation))
        if a * d - b * c < 0 or angle % 90:
            self.info.note(f"display matrix (rotation {angle} degrees{', mirrored' if a * d - b * c < 0 else ''}) "
                           f"not applied: only quarter turns are; frames processed as stored")
            return 0
        return (angle // 90) % 4

    def __iter__(self) -> Iterator[Frame]:
        info = self.info
        tick = info.time_base
        step = 1 / (self._native_rate * tick)  # the input's frame duration in time-base units
        last_pts = None
        index = retimed = 0
        frame = self._first
        self._first = None
        while frame is not None:
            pts = frame.pts
            if pts is None or (last_pts is not None and pts <= last_pts):
                # Missing or non-increasing timestamps: continue the regular grid (told in the summary).
                retimed += last_pts is not None
                pts = 0 if last_pts is None else last_pts + max(1, round(step))
            elif last_pts is not None and abs((pts - last_pts) - step) > 0.5 * step and not self.retimed:
                info.note("variable frame rate: the input's timestamps are kept")
            # PyAV may return a view with padded rows; native code (dlib) needs contiguous pixels.
            deep = None
            if info.bit_depth > 8:   # 16-bit RGB keeps a 10/12-bit video's levels (rgb24 would band them)
                deep = frame.reformat(format="rgb48le", interpolation=ACCURATE).to_ndarray()
                if self.rotation:
                    deep = np.rot90(deep, self.rotation)
                deep = np.ascontiguousarray(deep)
                image = to_8bit(deep)
            else:
                image = frame.reformat(format="rgb24", interpolation=ACCURATE).to_ndarray()
                if self.rotation:
                    image = np.rot90(image, self.rotation)
                image = np.ascontiguousarray(image)
            if image.shape[:2] != (info.height, info.width):
                raise InputError(f"{self.path}: frame {index} is {image.shape[1]}x{image.shape[0]}, "
                                 f"the stream is {info.width}x{info.height}; re-encode it at one size")
            yield Frame(index, image, int(pts), tick, deep)
            last_pts = pts
            index += 1
            frame = self._decode_next(index)
        if retimed:
            info.note(f"{retimed} frame(s) had no timestamp after the previous frame's (missing, repeated or going "
                      f"back): placed on the input's regular frame grid")

    def close(self) -> None:
        self._container.close()


class FolderSource(FrameSource):
    """Images of a folder, sorted by name, as frames at ``fps`` (default 20)."""

    def __init__(self, path: Path, fps: Optional[Fraction] = None):
        self.path = Path(path)
        self.files = list_frames(self.path)
        if not self.files:
            raise InputError(f"{self.path} holds no image frames ({', '.join(IMAGE_SUFFIXES)})")
        first, _ = read_image(self.files[0])
        rate = Fraction(fps or DEFAULT_FOLDER_FPS)
        self.info = SourceInfo(path=self.path, name=input_name(self.path), kind="frames", width=first.shape[1],
                               height=first.shape[0], fps=rate, time_base=1 / rate,
                               frame_count=len(self.files), has_audio=False)

    def __iter__(self) -> Iterator[Frame]:
        for index, file in enumerate(self.files):
            image, note = read_image(file)
            self.info.note(note)
            if image.shape[:2] != (self.info.height, self.info.width):
                raise InputError(f"{file} is {image.shape[1]}x{image.shape[0]} but the first frame is "
                                 f"{self.info.width}x{self.info.height}; all frames must have one size")
            yield Frame(index, image, index, self.info.time_base)


def open_source(path: Path, fps: Optional[Fraction] = None, stream: Optional[int] = None) -> FrameSource:
    """Open a video file or a frame folder; ``fps`` overrides the rate of the timeline; ``stream`` picks a
    video file's stream by its container index (default: :func:`choose_video_stream`)."""
    path = Path(path)
    if path.is_dir():
        if stream is not None:
            raise InputError(f"{path} is a frame folder: --stream applies to video files only")
        return FolderSource(path, fps)
    if not path.exists():
        raise InputError(f"input {path} does not exist")
    if path.suffix.lower() not in VIDEO_SUFFIXES:
        raise InputError(f"{path}: not a video ({', '.join(VIDEO_SUFFIXES)}) nor a frame folder")
    return VideoSource(path, fps, stream)


def find_inputs(path: Path) -> List[Path]:
    """The inputs named by ``path``: a video, a frame folder, or a batch: a folder of videos or a
    folder of frame folders."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"input {path} does not exist")
    odd = describe_input_kind(path)
    if odd:   # a FIFO would else be listed as a folder ("Not a directory")
        raise InputError(f"{odd}; give a video file or a folder of frames (`keep live -` reads a pipe)")
    if path.is_file():
        if path.suffix.lower() not in VIDEO_SUFFIXES:
            raise InputError(f"{path}: unsupported file type; give a video ({', '.join(VIDEO_SUFFIXES)}), "
                             f"a folder of PNG/JPEG frames or a folder of videos")
        return [path]
    entries = sorted(p for p in path.iterdir() if not is_apple_double(p))
    videos = [p for p in entries if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES]
    images = [p for p in entries if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    if videos and images:
        raise InputError(f"{path} mixes videos and images; put frames and videos in separate folders")
    if videos:
        return videos
    if images:
        return [path]
    # a folder of frame folders (e.g. the clips `keep degrade` writes): a batch of clips
    clips = [p for p in entries if p.is_dir() and not p.name.startswith(".") and list_frames(p)]
    if clips:
        return clips
    raise InputError(f"{path} holds no videos ({', '.join(VIDEO_SUFFIXES)}), no image frames and no "
                     f"folders of frames")


def read_frames(path: Path, max_frames: Optional[int] = None) -> np.ndarray:
    """All frames (or the first ``max_frames``) of a video or frame folder as (T, H, W, 3) uint8 RGB.

    For clips that fit in memory (evaluation, training samples); streaming code iterates
    :func:`open_source` instead. Decoding goes through the same accurate YUV -> RGB path."""
    with open_source(path) as source:
        frames = []
        for frame in source:
            if max_frames is not None and len(frames) >= max_frames:
                break
            frames.append(frame.image)
    if not frames:
        raise InputError(f"{path} has no frames")
    return np.stack(frames)
