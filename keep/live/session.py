"""One live session: capture thread -> frame queue (drop policy) -> causal restorer -> sink.

Per frame the latency is measured from capture (the frame became available: decoded, or due at
its timestamp under ``--realtime``) to emission (encoded and handed to the muxer). Frame t is
emitted before frame t+1 is taken from the queue.
"""
from __future__ import annotations

import json
import os
import signal
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np
from tqdm import tqdm

from keep.live.capture import CaptureThread, FrameQueue
from keep.live.stream_io import LiveInput, LiveSink

#: a restorer: (image (H, W, 3) uint8, time s, number among the frames read) -> output image
Restorer = Callable[[np.ndarray, float, int], np.ndarray]


@dataclass
class LiveSettings:
    realtime: bool = False               # replay a file at its own rate
    when_behind: str = "drop"            # "drop" or "wait" (see keep.live.capture)
    max_latency: float = 0.5             # s, capture -> emitted, under "drop"
    queue: Optional[int] = None          # queue capacity; None = enough frames for max_latency
    max_frames: Optional[int] = None
    crf: int = 23
    preset: str = "veryfast"
    overwrite: bool = False
    progress: bool = True


def percentile(values: List[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


@dataclass
class LiveSummary:
    source: str
    output: str
    frames_read: int = 0
    frames_dropped: int = 0
    dropped: Dict[str, int] = field(default_factory=dict)
    frames_written: int = 0
    frames_discarded: int = 0           # queued when the session was stopped (never due)
    ended: str = ""
    seconds: float = 0.0
    latencies: List[float] = field(default_factory=list)     # s per written frame
    restore_seconds: List[float] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)

    @property
    def throughput(self) -> float:
        return self.frames_written / self.seconds if self.seconds > 0 else 0.0

    def latency_ms(self) -> Dict[str, float]:
        return {name: 1000 * percentile(self.latencies, q) for name, q in (("median", 50), ("p95", 95), ("p99", 99))}

    def describe(self) -> str:
        lat = self.latency_ms()
        lines = [f"{self.source} -> {self.output}: {self.ended}",
                 f"  {self.frames_read} frames read, {self.frames_dropped} dropped "
                 f"({', '.join(f'{k} {v}' for k, v in self.dropped.items())}), {self.frames_written} written"
                 + (f", {self.frames_discarded} queued at stop" if self.frames_discarded else ""),
                 f"  latency capture -> emitted: median {lat['median']:.0f} ms, p95 {lat['p95']:.0f} ms, "
                 f"p99 {lat['p99']:.0f} ms; {self.throughput:.2f} frames/s over {self.seconds:.1f} s"]
        return "\n".join(lines + [f"  note: {n}" for n in self.notes])

    def to_json(self) -> Dict:
        data = asdict(self)
        data.update(latency_ms=self.latency_ms(), throughput=self.throughput)
        return data


def write_json_atomic(data: Dict, path: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle, indent=1)
    os.replace(tmp, path)


class _Interrupt:
    """SIGINT / SIGTERM set a flag the loop checks between frames, so a frame is never cut in half
    and the sink is always finished (main thread only; elsewhere the handlers stay as they are)."""

    def __init__(self):
        self.requested: Optional[str] = None
        self._saved = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig, name in ((signal.SIGINT, "Ctrl-C"), (signal.SIGTERM, "SIGTERM")):
                self._saved[sig] = signal.signal(sig, lambda *_, n=name: setattr(self, "requested", n))
        return self

    def __exit__(self, *exc):
        for sig, handler in self._saved.items():
            signal.signal(sig, handler)


def run_session(source: LiveInput, output: str, restorer: Restorer, output_size, settings: LiveSettings,
                stop: Optional[threading.Event] = None) -> LiveSummary:
    """Restore ``source`` into ``output`` until the source ends, ``max_frames``, Ctrl-C / SIGTERM or
    ``stop`` is set. ``output_size`` (w, h) of the restorer's frames. Returns the summary."""
    fps = source.fps or Fraction(30)
    summary = LiveSummary(source=source.source, output=output)
    if source.fps is None:
        summary.notes.append("the source gives no frame rate; 30 fps assumed for the encoder")
    capacity = settings.queue or max(2, int(np.ceil(settings.max_latency * float(fps))) + 1)
    queue = FrameQueue(settings.when_behind, settings.max_latency, capacity)
    sink = LiveSink(output, *output_size, fps, settings.crf, settings.preset, settings.overwrite,
                    color=getattr(source, "color", None))
    capture = CaptureThread(source, queue, settings.realtime, settings.max_frames)
    bar = tqdm(unit="frame", desc="live", disable=not settings.progress, total=source.frame_count)
    restore_ema = 0.0
    started = time.perf_counter()
    with _Interrupt() as interrupt:
        try:
            capture.start()
            while True:
                if interrupt.requested or (stop is not None and stop.is_set()):
                    summary.ended = f"stopped by {interrupt.requested or 'request'}"
                    break
                item = queue.get(expected_restore_s=restore_ema, timeout=0.2)
                if item is None:
                    if queue.closed:   # source ended (or failed) and every queued frame is done
                        break
                    continue
                t0 = time.perf_counter()
                image = restorer(item.frame.image, item.frame.time, item.frame.index)
                sink.write(image, item.frame.time)
                emitted = time.perf_counter()
                summary.latencies.append(emitted - item.captured_at)
                summary.restore_seconds.append(emitted - t0)
                restore_ema = (emitted - t0) if restore_ema == 0 else 0.8 * restore_ema + 0.2 * (emitted - t0)
                bar.update(1)
                if settings.progress and len(summary.latencies) % 10 == 0:
                    bar.set_postfix(dropped=queue.dropped.total,
                                    latency_ms=f"{1000 * summary.latencies[-1]:.0f}")
        finally:
            capture.stop()
            capture.join(timeout=5)
            summary.frames_discarded = queue.discard()
            bar.close()
            sink.close()
    summary.seconds = time.perf_counter() - (capture.result.first_capture or started)
    summary.frames_read = capture.result.read
    summary.frames_written = sink.frames
    summary.dropped = queue.dropped.as_dict()
    summary.frames_dropped = queue.dropped.total
    if not summary.ended:
        summary.ended = capture.result.ended or "end of stream"
    summary.ended = f"{summary.ended} after {summary.frames_read} frames"
    if capture.result.error is not None:
        summary.notes.append("the output is complete up to the last frame restored")
    if sink.retimed:
        summary.notes.append(f"{sink.retimed} frame(s) had a timestamp not after the previous frame's (repeated or "
                             f"going back): each was written 1/90000 s after the previous one")
    return summary
