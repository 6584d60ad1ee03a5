"""Pipeline stages that run beside the main thread, each behind a bounded queue.

Decoding (PyAV), the network (torch) and paste-back + encoding (OpenCV, PyAV) all release the GIL
in their native code, so threads overlap them with the main thread's detection and alignment.
Every queue is bounded, so memory stays bounded however fast one stage is next to another. A
stage built with ``threaded=False`` runs its work inline, at the call, in the same order: the
same computations in the same order, hence the same output bytes (the ``--no-overlap`` path).

Errors: the first exception raised in a stage is kept and re-raised in the main thread at its
next call into that stage (or at :meth:`Stage.close`); after an error or :meth:`Stage.abort` the
stage discards its queue (calling ``discard`` on each item so nobody waits on it) and its thread
ends. Queue operations poll with a short timeout so no side ever blocks forever on a dead peer.
"""
from __future__ import annotations

import queue
import threading
from typing import Callable, Generic, Iterable, Iterator, Optional, TypeVar

import torch

T = TypeVar("T")
_END = object()
_POLL_S = 0.05


class StageError(RuntimeError):
    """A stage ended without an exception of its own but its work is incomplete (aborted)."""


class Stage(Generic[T]):
    """Consumes items in order with ``handle`` in one thread (or inline)."""

    def __init__(self, name: str, handle: Callable[[T], None], maxsize: int, threaded: bool = True,
                 discard: Optional[Callable[[T], None]] = None):
        self.name = name
        self._handle = handle
        self._discard = discard
        self.threaded = threaded
        self.error: Optional[BaseException] = None
        self._stop = threading.Event()
        # OpenMP's thread count is per thread: a new thread would use every core and sum in another
        # order than the caller (different bits); it inherits the caller's count instead
        self._torch_threads = torch.get_num_threads()
        if threaded:
            self._queue: "queue.Queue" = queue.Queue(maxsize=max(1, maxsize))
            self._thread = threading.Thread(target=self._loop, name=f"keep-{name}", daemon=True)
            self._thread.start()

    def put(self, item: T) -> None:
        """Hand ``item`` to the stage (blocks while its queue is full); re-raises the stage's error."""
        if not self.threaded:
            self._handle(item)
            return
        while True:
            self.check()
            if self._stop.is_set():
                raise StageError(f"the {self.name} stage was stopped")
            try:
                self._queue.put(item, timeout=_POLL_S)
                return
            except queue.Full:
                continue

    def check(self) -> None:
        if self.error is not None:
            raise self.error

    def _loop(self) -> None:
        torch.set_num_threads(self._torch_threads)
        while True:
            try:
                item = self._queue.get(timeout=_POLL_S)
            except queue.Empty:
                if self._stop.is_set():
                    return
                continue
            if item is _END:
                return
            if self.error is not None or self._stop.is_set():
                if self._discard is not None:
                    self._discard(item)
                continue
            try:
                self._handle(item)
            except BaseException as err:  # re-raised in the main thread by check()
                self.error = err
                if self._discard is not None:
                    self._discard(item)

    def close(self) -> None:
        """Wait for every queued item to be handled; re-raises the stage's error."""
        if self.threaded:
            self.put(_END)
            self._thread.join()
        self.check()

    def abort(self, timeout: float = 30.0) -> None:
        """Stop without finishing the queue (after an error elsewhere); the thread ends after its current item."""
        if not self.threaded:
            return
        self._stop.set()
        self._thread.join(timeout)
        while True:  # items the thread did not reach
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not _END and self._discard is not None:
                self._discard(item)


def prefetch(items: Iterable[T], size: int, threaded: bool = True) -> Iterator[T]:
    """Iterate ``items`` in a thread, up to ``size`` ahead of the consumer; errors re-raised in order.

    Closing the returned generator (or leaving a ``for`` loop over it) stops the thread."""
    if not threaded:
        yield from items
        return
    buffer: "queue.Queue" = queue.Queue(maxsize=max(1, size))
    stop = threading.Event()

    def offer(entry) -> bool:
        while not stop.is_set():
            try:
                buffer.put(entry, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not offer((True, item)):
                    return
        except BaseException as err:
            offer((False, err))
            return
        offer((False, None))

    thread = threading.Thread(target=produce, name="keep-decode", daemon=True)
    thread.start()
    try:
        while True:
            try:
                ok, value = buffer.get(timeout=_POLL_S)
            except queue.Empty:
                if not thread.is_alive() and buffer.empty():
                    raise StageError("the decoding thread ended without a result")
                continue
            if ok:
                yield value
            elif value is None:
                return
            else:
                raise value
    finally:
        stop.set()
        thread.join(timeout=30.0)
