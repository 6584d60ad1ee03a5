"""Write small sample clips (tests, benchmarks, bug reports): frames plus an optional sine tone."""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Iterable, Optional

import av
import numpy as np

from keep.io.source import ACCURATE


def write_sample_clip(frames: Iterable[np.ndarray], path: Path, fps: Fraction = Fraction(20),
                      tone_hz: Optional[float] = 440.0, audio_codec: str = "aac", sample_rate: int = 44100,
                      crf: int = 12, display_rotation: int = 0) -> Path:
    """Encode (H, W, 3) uint8 RGB frames (even sizes) to ``path`` with a mono sine of ``tone_hz``
    lasting as long as the video (no audio when ``tone_hz`` is None). ``audio_codec`` "aac" suits
    MP4; "pcm_s16le" makes a MOV/MKV whose audio MP4 cannot hold. ``display_rotation`` (degrees,
    counter-clockwise, as ``VideoFrame.rotation`` reads it back) writes a display matrix, as phones do:
    players turn the stored frames by it."""
    frames = list(frames)
    height, width = frames[0].shape[:2]
    fps = Fraction(fps)
    with av.open(str(path), mode="w") as container:
        video = container.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.options = {"crf": str(crf)}
        if display_rotation:
            video.set_display_rotation(display_rotation)
        audio = None
        if tone_hz is not None:
            audio = container.add_stream(audio_codec, rate=sample_rate)
            audio.codec_context.layout = "mono"
        for image in frames:
            frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p", interpolation=ACCURATE)
            for packet in video.encode(frame):
                container.mux(packet)
        for packet in video.encode(None):
            container.mux(packet)
        if audio is not None:
            total = int(round(len(frames) / fps * sample_rate))
            wave = np.sin(2 * np.pi * tone_hz * np.arange(total) / sample_rate).astype(np.float32) * 0.3
            fmt = "fltp" if audio_codec == "aac" else "s16"
            chunk = 1024
            for start in range(0, total, chunk):
                part = wave[start:start + chunk]
                data = part[None] if fmt == "fltp" else (part * 32767).astype(np.int16)[None]
                frame = av.AudioFrame.from_ndarray(data, format=fmt, layout="mono")
                frame.sample_rate = sample_rate
                frame.pts = start
                for packet in audio.encode(frame):
                    container.mux(packet)
            for packet in audio.encode(None):
                container.mux(packet)
    return Path(path)
