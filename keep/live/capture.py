"""Reading the source on its own thread, and what happens to frames when the restorer falls behind.

A live source does not wait for us: the capture thread reads it at its own rate (or, for a file
replayed with ``--realtime``, releases each frame at its timestamp) and stamps every frame with its
capture time. Between the capture thread and the restorer sits a :class:`FrameQueue` with one of
two policies:

* ``drop`` (live sources): latency is bounded instead of growing. When the restorer takes the next
  frame it skips every queued frame that would be older than ``max_latency`` by the time it is
  restored (its age now + the recent restore time), but never the newest one, so the restorer
  always has work; and the queue never holds more than ``capacity`` frames (the oldest is dropped
  on overflow). Each dropped frame is counted. With restore time p and frame interval d, latency is
  at most about max(max_latency, p + d) (a newest frame waits at most one restore time).
* ``wait`` (files read as fast as we go, or ``--when-behind wait``): nothing is dropped, the
  reader blocks when the queue is full (back-pressure), latency grows if the restorer is slow.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Deque, Dict, Optional

from keep.live.stream_io import LiveFrame, LiveInput

POLICIES = ("drop", "wait")


@dataclass
class Captured:
    frame: LiveFrame
    captured_at: float            # time.perf_counter() when the frame became available


@dataclass
class DropCounter:
    stale: int = 0                # older than --max-latency by the time it would be restored
    overflow: int = 0             # pushed out of a full queue

    @property
    def total(self) -> int:
        return self.stale + self.overflow

    def as_dict(self) -> Dict[str, int]:
        return {"stale": self.stale, "overflow": self.overflow}


class FrameQueue:
    """Bounded hand-over between the capture thread and the restorer (see the module doc)."""

    def __init__(self, policy: str, max_latency: float, capacity: int):
        if policy not in POLICIES:
            raise ValueError(f"unknown drop policy {policy!r}; one of {POLICIES}")
        if capacity < 1:
            raise ValueError(f"queue capacity must be >= 1, got {capacity}")
        self.policy, self.max_latency, self.capacity = policy, max_latency, capacity
        self.dropped = DropCounter()
        self._items: Deque[Captured] = deque()
        self._cond = threading.Condition()
        self._closed = False

    def put(self, item: Captured) -> bool:
        """Queue a frame; returns False when the consumer has stopped (the reader should stop)."""
        with self._cond:
            if self.policy == "wait":
                while len(self._items) >= self.capacity and not self._closed:
                    self._cond.wait(0.1)
            elif len(self._items) >= self.capacity:
                self._items.popleft()
                self.dropped.overflow += 1
            if self._closed:
                return False
            self._items.append(item)
            self._cond.notify_all()
            return True

    def get(self, expected_restore_s: float = 0.0, timeout: Optional[float] = None) -> Optional[Captured]:
        """The next frame to restore (None when the source has ended and the queue is empty, or on
        timeout). Under ``drop``, stale frames ahead of it are dropped first."""
        deadline = None if timeout is None else time.perf_counter() + timeout
        with self._cond:
            while not self._items:
                if self._closed:
                    return None
                remaining = None if deadline is None else deadline - time.perf_counter()
                if remaining is not None and remaining <= 0:
                    return None
                self._cond.wait(0.1 if remaining is None else min(0.1, remaining))
            if self.policy == "drop":
                now = time.perf_counter()
                while len(self._items) > 1 and now - self._items[0].captured_at + expected_restore_s > self.max_latency:
                    self._items.popleft()
                    self.dropped.stale += 1
            item = self._items.popleft()
            self._cond.notify_all()
            return item

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """No more frames will be put (source ended) or taken (consumer stopped)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def discard(self) -> int:
        """Drop what is still queued when the consumer stops early; returns how many (not counted as
        dropped: they were never due)."""
        with self._cond:
            n = len(self._items)
            self._items.clear()
            self._cond.notify_all()
            return n


@dataclass
class CaptureResult:
    read: int = 0
    ended: str = ""                  # "end of stream", "source error: ...", "stopped"
    error: Optional[BaseException] = None
    first_capture: Optional[float] = None
    extra: Dict[str, str] = field(default_factory=dict)


class CaptureThread(threading.Thread):
    """Reads ``source`` into ``queue``; with ``realtime`` each frame is released at its timestamp
    (a file replayed as if it were a camera). ``max_frames`` stops after that many frames."""

    def __init__(self, source: LiveInput, queue: FrameQueue, realtime: bool = False,
                 max_frames: Optional[int] = None):
        super().__init__(name="keep-live-capture", daemon=True)
        self.source, self.queue, self.realtime, self.max_frames = source, queue, realtime, max_frames
        self.result = CaptureResult()
        self._stop_event = threading.Event()

    def stop(self) -> None:
        self._stop_event.set()
        self.queue.close()

    def run(self) -> None:
        start = None
        try:
            for frame in self.source.frames():
                if self._stop_event.is_set():
                    self.result.ended = "stopped"
                    break
                if self.realtime:
                    if start is None:
                        start = time.perf_counter() - frame.time
                    delay = start + frame.time - time.perf_counter()
                    if delay > 0 and self._stop_event.wait(delay):
                        self.result.ended = "stopped"
                        break
                # a replayed frame counts as captured when it was due (as a camera would have taken it),
                # even if back-pressure (policy "wait") delayed its reading
                now = start + frame.time if self.realtime else time.perf_counter()
                if self.result.first_capture is None:
                    self.result.first_capture = now
                if not self.queue.put(Captured(frame, now)):
                    self.result.ended = "stopped"
                    break
                self.result.read += 1
                if self.max_frames is not None and self.result.read >= self.max_frames:
                    self.result.ended = f"--max-frames {self.max_frames} reached"
                    break
            else:
                self.result.ended = "end of stream"
        except BaseException as err:  # a broken stream ends the capture; the session reports it
            self.result.error = err
            self.result.ended = f"source error: {err}"
        finally:
            self.queue.close()
