"""Copy the audio track of an input into an output container, interleaved with the video.

Packets are remuxed untouched when MP4 can hold the codec (AAC, MP3, Opus, ...); otherwise
(PCM in MOV/AVI, Vorbis in WebM, ...) the track is decoded and re-encoded to AAC.
"""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Iterator, Optional

import av

MP4_AUDIO_CODECS = {"aac", "mp3", "alac", "opus", "ac3", "eac3", "flac"}


class AudioCopier:
    """Feeds the first audio stream of ``source`` into ``output`` up to a given time."""

    def __init__(self, source: Path, output: "av.container.OutputContainer"):
        self._input = av.open(str(source))
        self._in_stream = self._input.streams.audio[0]
        self._output = output
        codec = self._in_stream.codec_context.name
        self.remux = codec in MP4_AUDIO_CODECS
        if self.remux:
            self._out_stream = output.add_stream_from_template(self._in_stream)
        else:
            rate = self._in_stream.codec_context.sample_rate or 48000
            self._out_stream = output.add_stream("aac", rate=rate)
            layout = self._in_stream.codec_context.layout.name if self._in_stream.codec_context.layout else "stereo"
            self._out_stream.codec_context.layout = layout
            self._resampler = av.AudioResampler(format="fltp", layout=layout, rate=rate)
        self.description = f"{codec} ({'copied' if self.remux else 're-encoded to AAC'})"
        self._packets: Iterator[av.Packet] = self._input.demux(self._in_stream)
        self._pending: Optional[av.Packet] = None
        self._done = False

    def _next_packet(self) -> Optional[av.Packet]:
        if self._pending is not None:
            packet, self._pending = self._pending, None
            return packet
        for packet in self._packets:
            if packet.dts is not None and packet.size:
                return packet
        self._done = True
        return None

    def _write(self, packet: av.Packet) -> None:
        if self.remux:
            packet.stream = self._out_stream
            self._output.mux(packet)
            return
        for frame in packet.decode():
            for resampled in self._resampler.resample(frame):
                self._output.mux(self._out_stream.encode(resampled))

    def pump(self, until: Fraction) -> None:
        """Write the audio packets that start before ``until`` seconds."""
        while not self._done:
            packet = self._next_packet()
            if packet is None:
                break
            if packet.pts is not None and packet.pts * packet.time_base > until:
                self._pending = packet
                break
            self._write(packet)

    def finish(self) -> None:
        """Write the rest of the track and flush the encoder (when re-encoding)."""
        while (packet := self._next_packet()) is not None:
            self._write(packet)
        if not self.remux:
            for resampled in self._resampler.resample(None):
                self._output.mux(self._out_stream.encode(resampled))
            self._output.mux(self._out_stream.encode(None))
        self._input.close()

    def close(self) -> None:
        self._input.close()
