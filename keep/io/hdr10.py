"""HDR10 static metadata: the mastering display (SMPTE ST 2086) and the content light levels
(MaxCLL / MaxFALL, CTA-861.3), read from the input's first frame and written into the output's
SEI, so players tone-map the restored video as they did the original.

FFmpeg hands both to a decoder's frames as side data (from the stream's SEI, or from the container's
``mdcv`` / ``clli`` boxes); the bytes are FFmpeg's structs (libavutil/mastering_display_metadata.h):
``AVMasteringDisplayMetadata`` is 22 int32 (three primaries in R, G, B order then the white point,
each x and y as num/den; min and max luminance as num/den; has_primaries; has_luminance) and
``AVContentLightMetadata`` two unsigned ints. x264 and x265 take them as encoder parameters, in
the units of the SEI itself: chromaticity in 1/50000, luminance in 1/10000 cd/m2.
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Optional, Tuple

import numpy as np

_CHROMA_UNIT = 50000     # SEI units of x and y (ITU-T H.265 D.3.28)
_LUMA_UNIT = 10000       # SEI units of cd/m2

Point = Tuple[int, int]  # (x, y) in 1/50000


@dataclass(frozen=True)
class Hdr10:
    """Static HDR metadata; any part may be absent (None)."""
    red: Optional[Point] = None
    green: Optional[Point] = None
    blue: Optional[Point] = None
    white: Optional[Point] = None
    max_luminance: Optional[int] = None    # 1/10000 cd/m2
    min_luminance: Optional[int] = None    # 1/10000 cd/m2
    max_cll: Optional[int] = None          # cd/m2
    max_fall: Optional[int] = None         # cd/m2

    @property
    def has_display(self) -> bool:
        return None not in (self.red, self.green, self.blue, self.white, self.max_luminance, self.min_luminance)

    @property
    def has_light_level(self) -> bool:
        return self.max_cll is not None and self.max_fall is not None

    def _display_text(self) -> str:
        (rx, ry), (gx, gy), (bx, by), (wx, wy) = self.red, self.green, self.blue, self.white
        return (f"G({gx},{gy})B({bx},{by})R({rx},{ry})WP({wx},{wy})"
                f"L({self.max_luminance},{self.min_luminance})")

    def x264_params(self) -> str:
        """For ``x264-params`` (x264's --mastering-display and --cll)."""
        parts = [f"mastering-display={self._display_text()}"] if self.has_display else []
        if self.has_light_level:
            parts.append(f"cll={self.max_cll},{self.max_fall}")
        return ":".join(parts)

    def x265_params(self) -> str:
        """For ``x265-params`` (x265's --master-display and --max-cll)."""
        parts = [f"master-display={self._display_text()}"] if self.has_display else []
        if self.has_light_level:
            parts.append(f"max-cll={self.max_cll},{self.max_fall}")
        return ":".join(parts)

    def describe(self) -> str:
        parts = []
        if self.has_display:
            parts.append(f"mastering display {self.max_luminance / _LUMA_UNIT:g}/"
                         f"{self.min_luminance / _LUMA_UNIT:g} cd/m2")
        if self.has_light_level:
            parts.append(f"MaxCLL {self.max_cll}, MaxFALL {self.max_fall}")
        return ", ".join(parts)


def _in_units(num: int, den: int, unit: int) -> Optional[int]:
    if den <= 0:
        return None
    return int(round(Fraction(int(num), int(den)) * unit))


def parse_mastering_display(raw: bytes) -> dict:
    """The fields of an ``AVMasteringDisplayMetadata`` side data (empty where its flags say absent)."""
    values = np.frombuffer(raw[:88], dtype=np.int32).astype(np.int64)
    if values.size < 22:
        return {}
    fields = {}
    if values[20]:   # has_primaries
        points = [(_in_units(*values[i:i + 2], _CHROMA_UNIT), _in_units(*values[i + 2:i + 4], _CHROMA_UNIT))
                  for i in (0, 4, 8, 12)]
        if all(None not in p for p in points):
            fields.update(red=points[0], green=points[1], blue=points[2], white=points[3])
    if values[21]:   # has_luminance
        low, high = _in_units(*values[16:18], _LUMA_UNIT), _in_units(*values[18:20], _LUMA_UNIT)
        if low is not None and high is not None:
            fields.update(min_luminance=low, max_luminance=high)
    return fields


def parse_light_level(raw: bytes) -> dict:
    """The fields of an ``AVContentLightMetadata`` side data."""
    values = np.frombuffer(raw[:8], dtype=np.uint32)
    if values.size < 2:
        return {}
    return {"max_cll": int(values[0]), "max_fall": int(values[1])}


def read_hdr10(frame) -> Optional[Hdr10]:
    """The HDR10 metadata a decoded PyAV frame carries, or None."""
    import av
    kinds = av.sidedata.sidedata.Type
    fields = {}
    for data in frame.side_data:
        if data.type == kinds.MASTERING_DISPLAY_METADATA:
            fields.update(parse_mastering_display(bytes(data)))
        elif data.type == kinds.CONTENT_LIGHT_LEVEL:
            fields.update(parse_light_level(bytes(data)))
    metadata = Hdr10(**fields)
    return metadata if (metadata.has_display or metadata.has_light_level) else None
