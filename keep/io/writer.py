"""Encode RGB frames to an H.264 MP4 with PyAV, written under a temporary name and renamed at the end.

A file at the final path therefore always is a complete video: a crash or an error leaves only the
hidden ``.<name>.partial.mp4``, which :meth:`VideoWriter.abort` removes (after a ``kill -9`` nothing
can: ``keep restore`` removes it at the start of the next run of that output, see :func:`partial_path`).
"""
from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path
from typing import Dict, Optional

import av
import numpy as np

from keep.io.audio import AudioCopier
from keep.io.hdr10 import Hdr10
from keep.io.source import ACCURATE, to_8bit

# Colour matrices swscale converts with (AVColorSpace values); others are left to its BT.601 default.
_SWS_MATRIX = {1: 1, 4: 4, 5: 5, 6: 5, 7: 7, 9: 9, 10: 9}

_PARTIAL = ".partial"

# Transfer characteristics (AVColorTransferCharacteristic) of HDR video: its levels mean luminance up to
# 10000 cd/m2 (PQ) or a scene light that needs more than 8 bits; 8-bit pixels under these tags band
# and are outside HDR10 (issue 21 item 4).
HDR_TRANSFERS = {16: "PQ (SMPTE ST 2084)", 18: "HLG (ARIB STD-B67)"}
_DEEP_FORMAT = "yuv420p10le"


def deep_encoder() -> Optional[str]:
    """The encoder that writes 10-bit 4:2:0 with PyAV's bundled FFmpeg: libx264 (High 10) if its x264 was
    built with 10-bit support, else libx265 (Main 10); None if neither can."""
    for codec in ("libx264", "libx265"):
        try:
            formats = av.codec.Codec(codec, "w").video_formats or []
        except (av.error.FFmpegError, ValueError):
            continue
        if any(f.name == _DEEP_FORMAT for f in formats):
            return codec
    return None


def color_tags(color: Optional[Dict[str, int]]) -> Dict[str, int]:
    """The input's colour tags worth copying: 0 (reserved) and 2 (unspecified) are left out."""
    return {k: v for k, v in (color or {}).items() if v not in (0, 2)}


def tag_stream(stream, color: Dict[str, int]) -> Optional[int]:
    """Give ``stream`` the colour tags ``color`` and return the swscale matrix to convert RGB with, so
    players show unchanged pixels unchanged (None: swscale's BT.601 default, for untagged video)."""
    for key, value in color.items():
        setattr(stream.codec_context, key, value)
    return _SWS_MATRIX.get(color.get("colorspace"))


def needs_deep_output(bit_depth: int, color: Optional[Dict[str, int]]) -> bool:
    """More than 8 bits in, or HDR tags (PQ / HLG): the output is written at 10 bits."""
    return bit_depth > 8 or (color or {}).get("color_trc") in HDR_TRANSFERS


def partial_path(path: Path) -> Path:
    """The temporary name :class:`VideoWriter` writes ``path`` under: ``out/x.mp4`` -> ``out/.x.partial.mp4``."""
    path = Path(path)
    return path.with_name(f".{path.stem}{_PARTIAL}{path.suffix}")


def final_path(temporary: Path) -> Optional[Path]:
    """The inverse of :func:`partial_path` (None for a name that is not one of its temporaries), so an
    error about the temporary can name the file the user asked for."""
    temporary = Path(temporary)
    stem = temporary.stem
    if not (temporary.name.startswith(".") and stem.endswith(_PARTIAL) and len(stem) > 1 + len(_PARTIAL)):
        return None
    return temporary.with_name(f"{stem[1:-len(_PARTIAL)]}{temporary.suffix}")


class VideoWriter:
    """libx264 / yuv420p MP4 writer keeping the input's timeline (10-bit with ``deep``, see __init__).

    ``time_base`` is the unit of the ``pts`` given to :meth:`write` (the input stream's exact
    rational time base), ``fps`` the nominal rate. yuv420p needs even sizes: odd widths or heights
    are padded by one replicated row/column (``padded`` tells the caller so it can say so).
    """

    def __init__(self, path: Path, width: int, height: int, fps: Fraction, time_base: Fraction,
                 audio_from: Optional[Path] = None, crf: int = 18, preset: str = "medium",
                 color: Optional[Dict[str, int]] = None, deep: bool = False,
                 tags: Optional[Dict[str, str]] = None, hdr10: Optional[Hdr10] = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = partial_path(self.path)
        self.width, self.height = width, height
        self.padded = (width % 2, height % 2) != (0, 0)
        self.time_base = Fraction(time_base)
        self.frames = 0
        color = color_tags(color)
        # ``deep``: 10 bits (input of more than 8 bits, or HDR tags) where an encoder can, else 8 bits
        # converted to SDR BT.709 (keep.io.hdr): never 8-bit pixels under HDR tags
        codec = deep_encoder() if deep else None
        self.bit_depth = 10 if codec else 8
        self.to_sdr: Optional[int] = None
        if deep and codec is None and color.get("color_trc") in HDR_TRANSFERS:
            self.to_sdr = color["color_trc"]
            color = {"colorspace": 1, "color_primaries": 1, "color_trc": 1}
        codec = codec or "libx264"
        pix_fmt = _DEEP_FORMAT if self.bit_depth > 8 else "yuv420p"
        self._container = av.open(str(self.tmp), mode="w", format="mp4")
        self._container.metadata.update(tags or {})   # container tags, e.g. keep.restore.window_tag
        stream = self._container.add_stream(codec, rate=Fraction(fps))
        stream.width, stream.height = width + width % 2, height + height % 2
        stream.pix_fmt = pix_fmt
        if codec == "libx265":
            stream.codec_tag = "hvc1"   # the tag Apple players need for HEVC in MP4
        stream.time_base = self.time_base
        stream.codec_context.time_base = self.time_base
        stream.options = {"crf": str(crf), "preset": preset}
        # HDR10 static metadata into the SEI (keep/io/hdr10.py): kept with the HDR tags, dropped with
        # them when the frames become SDR
        hdr10 = hdr10 if (self.bit_depth > 8 and color.get("color_trc") in HDR_TRANSFERS) else None
        if codec == "libx265":
            stream.options["x265-params"] = ":".join(["log-level=error"] + ([hdr10.x265_params()] if hdr10 else []))
        elif hdr10 is not None:
            stream.options["x264-params"] = hdr10.x264_params()
        self._matrix = tag_stream(stream, color)   # the input's matrix and tags
        self._format = pix_fmt
        names = {"libx264": "H.264 High 10" if self.bit_depth > 8 else "H.264", "libx265": "HEVC Main 10"}
        self.description = f"{self.bit_depth}-bit {names[codec]} ({pix_fmt})"
        if color.get("color_trc") in HDR_TRANSFERS:
            self.description += f", HDR tags of the input kept ({HDR_TRANSFERS[color['color_trc']]})"
        if hdr10 is not None:
            self.description += f" and its HDR10 metadata ({hdr10.describe()})"
        if self.to_sdr is not None:
            self.description += (f": no 10-bit encoder in this PyAV build, so the {HDR_TRANSFERS[self.to_sdr]} "
                                 f"input was converted to SDR BT.709")
        self._stream = stream
        self.audio: Optional[AudioCopier] = None
        if audio_from is not None:
            try:
                self.audio = AudioCopier(audio_from, self._container)
            except BaseException:
                self.abort()
                raise

    def write(self, image: np.ndarray, pts: int) -> None:
        """Encode one ``(H, W, 3)`` RGB frame, uint8 or uint16 (full scale 65535), at ``pts`` (in
        ``time_base`` units). A 10-bit writer takes both; an 8-bit one rounds uint16 to 8 bits."""
        if self.to_sdr is not None:
            from keep.io.hdr import hdr_to_sdr
            image = hdr_to_sdr(image, self.to_sdr)
        if self.bit_depth > 8:
            image = image.astype(np.uint16) * 257 if image.dtype == np.uint8 else image
        elif image.dtype == np.uint16:
            image = to_8bit(image)
        if self.padded:
            image = np.pad(image, ((0, self.height % 2), (0, self.width % 2), (0, 0)), mode="edge")
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image),
                                           format="rgb48le" if image.dtype == np.uint16 else "rgb24")
        frame = frame.reformat(format=self._format, interpolation=ACCURATE, dst_colorspace=self._matrix)
        frame.pts = pts
        frame.time_base = self.time_base
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.frames += 1
        if self.audio is not None:
            self.audio.pump(pts * self.time_base)

    def close(self) -> Path:
        """Flush, close and rename to the final path; returns it."""
        self.finish()
        return self.commit()

    def finish(self) -> None:
        """Flush the encoder and close the file, still under its temporary name: everything that can
        fail (a full disk) fails here, so several writers can all finish before any is committed."""
        for packet in self._stream.encode(None):
            self._container.mux(packet)
        if self.audio is not None:
            self.audio.finish()
        self._container.close()

    def commit(self) -> Path:
        """Rename the finished temporary file to the final path; returns it."""
        os.replace(self.tmp, self.path)
        return self.path

    def abort(self) -> None:
        """Close and delete the temporary file (after an error)."""
        try:
            if self.audio is not None:
                self.audio.close()
            self._container.close()
        except Exception:  # the container may be half-written; removing it is all that matters
            pass
        self.tmp.unlink(missing_ok=True)
