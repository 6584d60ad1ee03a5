"""The frames a run holds, bounded in bytes of memory (``--frame-memory``).

``keep restore`` holds every frame from its decoding to its paste-back: the shot look-ahead (22-32
frames), the landmark look-ahead (``--max-gap`` + 20), a window, and the paste-back queue. That is
about 90 frames, which is 0.5 GB at 1080p but 2.2 GB at 4K and 6.7 GB for 4K at 10 bits (uint16
pixels plus their 8-bit rounding), and four times that at 8K. Frames are used in order (detection
when they arrive, then nothing until their window is cropped and they are pasted back), so the
newest frames are the ones needed last. Once the frames held in memory reach the budget, each new
frame's pixels are written to a temporary file next to the output and mapped back read-only
(``np.memmap``, copy-on-write): every consumer still sees an ``ndarray`` and the output is the same,
byte for byte (tests/test_frame_spill.py). The OS reads the pages back when the frame is cropped
and pasted, and may drop them again under pressure, because they are file pages and not the
process's own memory. The file is unlinked as soon as it is mapped, so nothing is left on disk,
not even after a crash or ``kill -9``. The mapping keeps the data until the frame is released.
"""
from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path
from typing import Dict, Optional, Tuple

import numpy as np

from keep.io.source import Frame

GIB = 2 ** 30
DEFAULT_CAP = 4 * GIB       # the most an automatic budget takes ...
AVAILABLE_SHARE = 0.25      # ... and at most this share of the memory available at the start


def default_budget(environ=os.environ) -> int:
    """A quarter of the host's available memory, at most 4 GiB: 4K 8-bit video (2.2 GB) stays in
    memory on a 16 GB machine; 4K 10-bit and 8K spill. Under torchrun the processes of a node share
    that quarter (``LOCAL_WORLD_SIZE``)."""
    from keep.restore.batching import available_memory
    import torch
    free = available_memory(torch.device("cpu"))
    budget = DEFAULT_CAP if free is None else min(DEFAULT_CAP, AVAILABLE_SHARE * free)
    return int(budget / max(1, int(environ.get("LOCAL_WORLD_SIZE", "1") or 1)))


def frame_bytes(frame: Frame) -> int:
    return int(frame.image.nbytes) + (int(frame.deep.nbytes) if frame.deep is not None else 0)


class FrameSpill:
    """Admits frames as they are decoded and releases them once written.

    A frame admitted while the frames held in memory already fill ``budget`` bytes is spilled: its
    pixel arrays become read-only maps of unlinked files in ``folder``."""

    def __init__(self, budget: int, folder: Path):
        self.budget = int(budget)
        self.folder = Path(folder)
        self.in_memory = 0                          # bytes of the frames held in memory
        self._held: Dict[int, Tuple[int, bool]] = {}   # frame index -> (bytes, spilled)
        self.spilled_frames = 0                     # over the run
        self.spilled_bytes = 0
        self.peak_in_memory = 0
        self._lock = threading.Lock()   # admitted by the decoding thread, released by the encoding one

    def admit(self, frame: Frame) -> Frame:
        size = frame_bytes(frame)
        with self._lock:
            spill = self.in_memory > 0 and self.in_memory + size > self.budget   # the first frame always fits
            if not spill:
                self.in_memory += size
                self.peak_in_memory = max(self.peak_in_memory, self.in_memory)
            self._held[frame.index] = (size, spill)
        if spill:
            frame.image = self._to_disk(frame.image)
            if frame.deep is not None:
                frame.deep = self._to_disk(frame.deep)
            self.spilled_frames += 1
            self.spilled_bytes += size
        return frame

    def release(self, frame: Frame) -> None:
        """The frame is written: its memory counts no more (its map goes with the frame)."""
        with self._lock:
            size, spilled = self._held.pop(frame.index, (0, True))
            if not spilled:
                self.in_memory -= size

    def admit_all(self, frames):
        for frame in frames:
            yield self.admit(frame)

    def _to_disk(self, array: np.ndarray) -> np.ndarray:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(prefix=".keep-frame-", suffix=".raw", dir=self.folder)
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(memoryview(np.ascontiguousarray(array)).cast("B"))
                # copy-on-write: a consumer that writes into a frame gets private pages, never an error
                return np.memmap(name, dtype=array.dtype, mode="c", shape=array.shape)
            finally:
                os.unlink(name)   # the map holds the data; nothing is left behind, whatever happens next
        except OSError as err:   # a full disk, a read-only folder: say what the files were for
            raise OSError(err.errno, f"{err.strerror or err} (frames beyond --frame-memory "
                                     f"{self.budget / GIB:.2f} GiB wait in temporary files there; free some space "
                                     f"or raise --frame-memory)", str(self.folder)) from err

    def describe(self) -> Optional[str]:
        if not self.spilled_frames:
            return None
        return (f"{self.spilled_frames} frames ({self.spilled_bytes / GIB:.2f} GiB) held in temporary files "
                f"next to the output: the frames in memory reached --frame-memory "
                f"{self.budget / GIB:.2f} GiB")
