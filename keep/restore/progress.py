"""What a ``keep restore`` run shows while it works: two bars and, once the first frame is out, one line
with its time and an estimate of the rest.

A frame is written only when its window has been through the network, so a bar of frames written
stands still for a whole window (minutes on a CPU at the release's window of 20). A second bar counts
faces as they leave the network's decoder: a forward hook on ``net.generator``, which
:meth:`keep.archs.keep_net.KEEP._run` calls once per frame of a window (once per window with
``--image-baseline``, for all its frames), so it moves from the first face on without any change to
the network. Until then the frames bar shows how many frames have been decoded and searched for faces.

The estimate splits the time measured so far in two: the network (from the start of each call,
a pre-hook on ``net.encoder``, which every window starts with, to each face decoded) per face, and
everything else (decoding, detection, alignment, paste-back, encoding) per decoded frame; the rest of
the clip is priced at those two rates. Unlike an average of frames written over the time since the
start, it is not thrown off by the look-ahead frames that are detected before the first window runs.
"""
from __future__ import annotations

import sys
import time
from typing import Callable, Optional

import torch
from tqdm import tqdm

#: ``--window`` when the network runs on the CPU and none is given. The first frame is written once
#: its window is through the network: at 4-15 s a frame on 2 cores (docs/restore.md) the release's 20
#: frames take 1.5-5 minutes, 4 frames 17-60 s. The Kalman state is carried from window to window, so
#: nothing restarts; only the gain's temporal attention spans one window (keep.archs.kalman), so the
#: frames are close to, not identical with, those of window 20. A window also holds its activations
#: for the recurrent loop: 4 frames need far less memory than 20.
CPU_WINDOW = 4
#: The release's ``max_length``, kept wherever the network is not on the CPU.
DEFAULT_WINDOW = 20


def default_window(device: torch.device) -> int:
    """The window used when the user gives none: :data:`CPU_WINDOW` on the CPU, else :data:`DEFAULT_WINDOW`."""
    return CPU_WINDOW if torch.device(device).type == "cpu" else DEFAULT_WINDOW


def format_duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class RunProgress:
    """The bars of one input. ``decoded()`` after each frame is searched for faces, ``written(faces)``
    after each frame is written; ``close()`` at the end (it also removes the hooks)."""

    def __init__(self, net: torch.nn.Module, name: str, total: Optional[int], enabled: bool,
                 faces_per_frame: Callable[[], float], report: Optional[Callable[[str], None]] = None):
        self.total = total
        self.enabled = enabled
        self.faces_per_frame = faces_per_frame   # expected faces per frame (1 for one face)
        # beside the bars (stderr), so stdout keeps only the run's summary
        self.report = report or (lambda line: tqdm.write(line, file=sys.stderr))
        self.started = time.perf_counter()
        # no tqdm estimate of its own: it divides the time since the start, look-ahead detection included,
        # by the frames written, and would contradict (by far) the one in the postfix (see eta())
        self.frames = tqdm(total=total, unit="frame", desc=name, disable=not enabled, position=0,
                           bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} frames written [{elapsed}{postfix}]")
        self.network = tqdm(total=None, unit="face", desc="network", disable=not enabled, position=1, leave=False,
                            bar_format="{desc}: {n_fmt} faces restored [{elapsed}{postfix}]")
        self.decoded_frames = 0
        self.faces = 0                    # faces out of the decoder
        self.written_frames = 0
        self.network_seconds = 0.0
        self._mark: Optional[float] = None
        self._shown = 0.0
        self.first_line: Optional[str] = None
        self._hooks = []
        encoder, generator = getattr(net, "encoder", None), getattr(net, "generator", None)
        if encoder is not None and generator is not None:   # a KEEP network (keep.archs.keep_net)
            self._hooks = [encoder.register_forward_pre_hook(self._call_started),
                           generator.register_forward_hook(self._faces_done)]

    # hooks: called in the network's thread (a stage thread when stages overlap)
    def _call_started(self, module, inputs) -> None:
        self._mark = time.perf_counter()
        # the encoder and the flow net take the whole window first (a minute or more on a CPU): say so
        self.network.set_postfix_str(f"encoding a window of {int(inputs[0].shape[0])} frames", refresh=True)

    def _faces_done(self, module, inputs, output) -> None:
        now = time.perf_counter()
        if self._mark is not None:
            self.network_seconds += now - self._mark
        self._mark = now
        count = int(output.shape[0])
        self.faces += count
        eta = self.eta()   # known from the first face on, before any frame is written
        self.network.set_postfix_str(f"{self.network_seconds / self.faces:.1f} s a face"
                                     + (f", about {format_duration(eta)} left" if eta is not None else ""),
                                     refresh=False)
        self.network.update(count)

    # called by the pipeline
    def decoded(self) -> None:
        self.decoded_frames += 1
        now = time.perf_counter()
        if self.written_frames == 0 and now - self._shown >= 0.5:   # before the first frame is out
            self._shown = now
            self.frames.set_postfix_str(f"{self.decoded_frames} frames searched for faces", refresh=True)

    def written(self, faces: int) -> None:
        self.written_frames += 1
        elapsed = time.perf_counter() - self.started
        eta = self.eta()
        text = f"{self.faces / max(elapsed, 1e-9):.2f} faces/s"
        if eta is not None:
            text += f", about {format_duration(eta)} left"
        self.frames.set_postfix_str(text, refresh=False)
        self.frames.update(1)
        if self.written_frames == 1:
            line = f"first frame written after {format_duration(elapsed)}"
            if self.faces:
                line += f" (network: {self.network_seconds / self.faces:.1f} s a face)"
            if eta is not None:
                line += f"; about {format_duration(eta)} more for the other {self.total - 1} frames"
            self.first_line = line
            if self.enabled:
                self.report(line)

    def eta(self) -> Optional[float]:
        """Seconds left: faces still to restore at the network's measured time per face, plus frames still to
        decode at the measured time per frame of everything else. None until both rates are known."""
        if not self.total or not self.faces or not self.decoded_frames:
            return None
        elapsed = time.perf_counter() - self.started
        per_face = self.network_seconds / self.faces
        per_frame_other = max(0.0, elapsed - self.network_seconds) / self.decoded_frames
        faces_left = max(0.0, self.total * self.faces_per_frame() - self.faces)
        frames_left = max(0, self.total - self.decoded_frames)
        return faces_left * per_face + frames_left * per_frame_other

    def close(self) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks = []
        self.network.close()
        self.frames.close()
