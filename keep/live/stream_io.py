"""Live inputs and outputs through PyAV: camera, network stream, stdin pipe or file in; a progressively
written file (fragmented MP4 / MPEG-TS), a network stream or stdout out.

Every output is playable at any moment it is cut: MPEG-TS by construction, MP4 as fragmented MP4
(``frag_keyframe+empty_moov``: no index at the end to finish), with a keyframe every second so a
killed process loses at most the last second. The encoder runs x264 with ``tune=zerolatency``
(no B-frames, no look-ahead), so every frame is muxed as soon as it is encoded.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Dict, Iterator, Optional, Tuple

import av
import numpy as np

from keep.io.errors import InputError
from keep.io.hdr import hdr_to_sdr
from keep.io.source import ACCURATE
from keep.io.writer import HDR_TRANSFERS, color_tags, tag_stream

#: output time base: MPEG-TS's 90 kHz clock, exact for every common frame rate
TIME_BASE = Fraction(1, 90000)

_URL_FORMATS = {"rtmp": "flv", "rtmps": "flv", "rtsp": "rtsp", "udp": "mpegts", "srt": "mpegts", "tcp": "mpegts"}
_FILE_FORMATS = {".ts": "mpegts", ".mts": "mpegts", ".m2ts": "mpegts", ".mp4": "mp4", ".mov": "mp4"}


def is_url(text: str) -> bool:
    return "://" in text


def is_camera(text: str) -> bool:
    return text.startswith("/dev/video")


def source_kind(text: str) -> str:
    """"pipe" (``-``), "camera" (/dev/video*), "url" (scheme://...) or "file"."""
    if text == "-":
        return "pipe"
    if is_camera(text):
        return "camera"
    if is_url(text):
        return "url"
    return "file"


@dataclass
class LiveFrame:
    """One decoded frame: (H, W, 3) uint8 RGB and its presentation time in seconds."""
    index: int
    image: np.ndarray
    time: float


class LiveInput:
    """A video stream opened with PyAV, decoded to RGB frames one at a time.

    ``input_format`` forces a demuxer (``v4l2`` for cameras by default, ``rawvideo`` / ``mpegts`` /
    ``yuv4mpegpipe`` for pipes); ``options`` are demuxer options (``video_size``, ``framerate``,
    ``pixel_format``, ``rtsp_transport`` ...).
    """

    def __init__(self, source: str, input_format: Optional[str] = None, options: Optional[Dict[str, str]] = None,
                 timeout: Optional[float] = 10.0):
        self.source, self.kind = source, source_kind(source)
        fmt = input_format or ("v4l2" if self.kind == "camera" else None)
        if self.kind == "file" and not Path(source).is_file():
            raise InputError(f"input {source} does not exist (give a video file, /dev/videoN, a URL or - for stdin)")
        target = sys.stdin.buffer if self.kind == "pipe" else source
        try:
            self._container = av.open(target, mode="r", format=fmt, options=dict(options or {}),
                                      timeout=timeout if self.kind in ("url", "camera") else None)
        except (av.error.FFmpegError, OSError, ValueError) as err:
            hint = {"pipe": "for raw frames on stdin pass --input-format rawvideo with --input-option "
                            "video_size=WxH --input-option pixel_format=rgb24 --input-option framerate=FPS",
                    "camera": "check the device exists and is not in use (v4l2-ctl --list-devices)",
                    "url": "check the address and that the stream is live",
                    "file": "check it is a complete, playable video"}[self.kind]
            raise InputError(f"cannot open {source!r}: {err}; {hint}") from err
        if not self._container.streams.video:
            self._container.close()
            raise InputError(f"{source!r} has no video stream")
        self._stream = self._container.streams.video[0]
        self._stream.thread_type = "AUTO"
        context = self._stream.codec_context
        self.width, self.height = context.width, context.height
        rate = self._stream.average_rate or self._stream.guessed_rate or self._stream.base_rate
        self.fps = Fraction(rate) if rate else None
        self.frame_count = self._stream.frames or None
        # HDR (PQ / HLG): the live encoder writes 8-bit SDR, so the frames are tone-mapped to SDR BT.709
        # on decode (keep/io/hdr.py); 8-bit pixels of a PQ signal would play washed out and banded.
        self.hdr_transfer = int(context.color_trc) if int(context.color_trc) in HDR_TRANSFERS else None
        self.note = (f"{HDR_TRANSFERS[self.hdr_transfer]} HDR input converted to SDR BT.709 (keep live writes 8-bit SDR; "
                     f"keep restore keeps HDR at 10 bits)" if self.hdr_transfer else None)
        # the colour tags the output copies (keep restore's rule): BT.709 once HDR is converted to SDR
        self.color = ({"colorspace": 1, "color_primaries": 1, "color_trc": 1} if self.hdr_transfer else
                      color_tags({k: int(getattr(context, k)) for k in ("colorspace", "color_primaries", "color_trc")}))

    def frames(self) -> Iterator[LiveFrame]:
        """Decoded frames with their times (s, from the stream's first timestamp). Missing or
        non-increasing timestamps continue the nominal rate. Decoding errors propagate."""
        step = float(1 / self.fps) if self.fps else 1 / 30
        first, last, index = None, None, 0
        for frame in self._container.decode(self._stream):
            t = float(frame.pts * frame.time_base) if frame.pts is not None and frame.time_base else None
            if t is not None and first is None:
                first = t
            t = None if t is None else t - first
            if t is None or (last is not None and t <= last):
                t = 0.0 if last is None else last + step
            if self.hdr_transfer:
                deep = frame.reformat(format="rgb48le", interpolation=ACCURATE).to_ndarray()
                image = np.ascontiguousarray(hdr_to_sdr(deep, self.hdr_transfer))
            else:
                image = np.ascontiguousarray(frame.reformat(format="rgb24", interpolation=ACCURATE).to_ndarray())
            yield LiveFrame(index, image, t)
            last = t
            index += 1

    def close(self) -> None:
        try:
            self._container.close()
        except Exception:  # closing a broken network stream must not hide why it broke
            pass


def sink_format(target: str) -> Tuple[str, str]:
    """(muxer, kind) for an output: ``-`` = MPEG-TS on stdout, a URL by its scheme, a file by suffix."""
    if target == "-":
        return "mpegts", "stdout"
    if is_url(target):
        scheme = target.split("://", 1)[0].lower()
        if scheme not in _URL_FORMATS:
            raise InputError(f"cannot push to {scheme}:// streams; use one of "
                             f"{', '.join(s + '://' for s in sorted(_URL_FORMATS))}")
        return _URL_FORMATS[scheme], "url"
    suffix = Path(target).suffix.lower()
    if suffix not in _FILE_FORMATS:
        raise InputError(f"{target}: live output files must be .mp4 (fragmented) or .ts (MPEG-TS), got {suffix!r}")
    return _FILE_FORMATS[suffix], "file"


class LiveSink:
    """H.264 encoder + muxer writing each frame as it comes.

    Files are written in place (not under a temporary name: a live file is meant to be watched and
    to survive the process being stopped), and an existing file is refused unless ``overwrite``.
    """

    def __init__(self, target: str, width: int, height: int, fps: Fraction, crf: int = 23,
                 preset: str = "veryfast", overwrite: bool = False, color: Optional[Dict[str, int]] = None):
        self.target = target
        fmt, self.kind = sink_format(target)
        if self.kind == "file":
            path = Path(target)
            if path.exists() and not overwrite:
                raise InputError(f"{path} already exists; pass --overwrite to replace it")
            path.parent.mkdir(parents=True, exist_ok=True)
        self.width, self.height = width, height
        self.padded = (width % 2, height % 2) != (0, 0)
        self.frames = 0
        self._last_pts: Optional[int] = None
        self.retimed = 0     # frames whose time was not after the previous one's (moved 1/90000 s later)
        options = {"movflags": "frag_keyframe+empty_moov+default_base_moof"} if fmt == "mp4" else {}
        try:
            out = sys.stdout.buffer if self.kind == "stdout" else target
            self._container = av.open(out, mode="w", format=fmt, options=options)
        except (av.error.FFmpegError, OSError) as err:
            raise InputError(f"cannot open the output {target!r}: {err}") from err
        stream = self._container.add_stream("libx264", rate=Fraction(fps))
        stream.width, stream.height = width + width % 2, height + height % 2
        stream.pix_fmt = "yuv420p"
        stream.time_base = TIME_BASE
        stream.codec_context.time_base = TIME_BASE
        gop = max(1, round(float(fps)))   # a keyframe (a new MP4 fragment) every second
        stream.options = {"crf": str(crf), "preset": preset, "tune": "zerolatency", "g": str(gop),
                          "bf": "0"}
        self._matrix = tag_stream(stream, color_tags(color))   # the input's matrix and tags, as keep restore
        self._stream = stream

    def write(self, image: np.ndarray, time: float) -> None:
        """Encode and mux one (H, W, 3) uint8 RGB frame shown at ``time`` seconds."""
        if self.padded:
            image = np.pad(image, ((0, self.height % 2), (0, self.width % 2), (0, 0)), mode="edge")
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        frame = frame.reformat(format="yuv420p", interpolation=ACCURATE, dst_colorspace=self._matrix)
        pts = int(round(time / TIME_BASE))
        if self._last_pts is not None and pts <= self._last_pts:
            pts = self._last_pts + 1     # a container needs increasing times: told in the summary
            self.retimed += 1
        frame.pts, frame.time_base = pts, TIME_BASE
        self._last_pts = pts
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.frames += 1

    def close(self) -> None:
        """Flush the encoder and finish the container (idempotent)."""
        if self._container is None:
            return
        try:
            for packet in self._stream.encode(None):
                self._container.mux(packet)
        finally:
            self._container.close()
            self._container = None
            if self.kind == "stdout":
                sys.stdout.buffer.flush()
