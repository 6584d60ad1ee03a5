"""One restoration of the demo: the same :class:`VideoRestorer` as ``keep restore``, in a worker thread.

The page polls :meth:`RestoreJob.progress` while the worker runs; :meth:`RestoreJob.cancel` makes the
pipeline's ``on_frame`` callback raise, which aborts the video writers (their partial files are
deleted), and the worker then removes the run folder. One lock per device keeps a cancelled run that
is still finishing its window from overlapping the next one (the page's queue admits one run per device).
"""
from __future__ import annotations

import logging
import re
import shutil
import threading
import time
import zipfile
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Dict, Optional, Tuple

import torch

from keep.checkpoint import CheckpointError
from keep.demo.frames import extract_input_frames
from keep.demo.workspace import Limits, check_length, prepare_input, too_long
from keep.io.errors import InputError
from keep.restore.options import RestoreOptions
from keep.restore.pipeline import RunSummary, VideoRestorer
from keep.restore.restorer import resolve_device
from keep.weights import WeightsNotFoundError, get_weight

log = logging.getLogger("keep.demo")

#: Errors a user can act on: shown as their message (the same set ``keep restore`` reports).
EXPECTED = (InputError, WeightsNotFoundError, CheckpointError, FileNotFoundError, ValueError, KeyError)


@dataclass
class DemoSettings:
    """The choices of the page; :meth:`options` turns them into the pipeline's RestoreOptions."""
    weights: str = "keep-v1"               # registry name or checkpoint path
    checkpoint: Optional[str] = None       # an uploaded checkpoint: used instead of ``weights``
    detector: str = "retinaface"
    aligned: bool = False
    all_faces: bool = False
    window: Optional[int] = None           # None: keep restore's default (keep/restore/progress.py)
    reset_state_per_window: bool = False
    image_baseline: bool = False
    bg_upsampler: Optional[str] = None
    precision: str = "fp32"
    crf: int = 18

    @property
    def weights_source(self) -> str:
        return self.checkpoint or self.weights

    def options(self, output_dir: Path, device: str) -> RestoreOptions:
        return RestoreOptions(
            output_dir=output_dir, weights=self.weights_source, detector=self.detector, aligned=self.aligned,
            all_faces=self.all_faces, window=None if self.window is None else int(self.window),
            reset_state_per_window=self.reset_state_per_window,
            image_baseline=self.image_baseline, bg_upsampler=self.bg_upsampler or None, device=device,
            precision=self.precision, crf=int(self.crf), compare=True, save_faces=True, save_cropped=True,
            save_frames=True, progress=False)

    def describe(self) -> str:
        weights = Path(self.checkpoint).name if self.checkpoint else self.weights
        parts = [f"weights {weights}", "aligned input" if self.aligned else f"detector {self.detector}",
                 "all faces" if self.all_faces else "centre face", f"window {self.window or 'default'}",
                 "state reset per window" if self.reset_state_per_window else "state carried across windows",
                 self.precision, f"CRF {self.crf}"]
        if self.image_baseline:
            parts.append("image baseline (no propagation)")
        if self.bg_upsampler:
            parts.append(f"background {self.bg_upsampler}")
        return ", ".join(parts)


@dataclass
class Progress:
    frames: int = 0
    total: Optional[int] = None
    faces: int = 0
    seconds: float = 0.0

    def describe(self) -> str:
        speed = self.frames / self.seconds if self.seconds > 0 else 0.0
        done = f"{self.frames} / {self.total} frames" if self.total else f"{self.frames} frames"
        if self.total:
            done += f" ({100 * self.frames / self.total:.0f}%)"
        parts = [done, f"{self.faces} face{'s' if self.faces != 1 else ''}", f"{speed:.2f} frames/s"]
        if self.total and speed > 0:
            parts.append(f"ETA {_duration(max(self.total - self.frames, 0) / speed)}")
        return " · ".join(parts)

    def describe_done(self) -> str:
        speed = self.frames / self.seconds if self.seconds > 0 else 0.0
        return (f"{self.frames} frames, {self.faces} face{'s' if self.faces != 1 else ''} in {self.seconds:.1f} s "
                f"({speed:.2f} frames/s)")


@dataclass
class RunResult:
    """What a finished run left in its folder (all paths inside it)."""
    folder: Path
    name: str
    video: Path
    compare: Path
    faces_zip: Optional[Path]
    frames: int
    fps: float
    aligned: bool
    input_frames: Path        # <folder>/input_frames/00000000.jpg ...
    output_frames: Path       # the pipeline's final_frames/
    crops: Path               # the pipeline's cropped_faces/
    faces: Path               # the pipeline's restored_faces/
    summary: str


class Cancelled(Exception):
    """Raised inside the pipeline's callback to stop a run."""


class ModelCache:
    """The last loaded network, reused while the same file and device are asked for (the released
    network takes seconds to load)."""

    def __init__(self, download: bool = True):
        self.download = download
        self._key: Optional[Tuple] = None
        self._net = None
        self._lock = threading.Lock()

    def get(self, weights: str, device: torch.device):
        from keep.api import load_model
        path = Path(weights)
        key = (str(path.resolve()), path.stat().st_mtime_ns) if path.is_file() else (weights,)
        key += (str(device),)
        with self._lock:
            if key != self._key:
                self._net = self._key = None       # free the previous network before loading the next
                self._net = load_model(weights, device=device, download=self.download)
                self._key = key
            return self._net


_DEVICE_LOCKS: Dict[str, threading.Lock] = {}
_DEVICE_LOCKS_GUARD = threading.Lock()


def device_lock(device: torch.device) -> threading.Lock:
    with _DEVICE_LOCKS_GUARD:
        return _DEVICE_LOCKS.setdefault(str(device), threading.Lock())


class RestoreJob:
    """Restore one upload into ``run_folder``; :meth:`start` runs it in a thread."""

    def __init__(self, upload: Optional[str], settings: DemoSettings, run_folder: Path, limits: Limits,
                 models: ModelCache, device: str = "auto", threads: Optional[int] = None):
        self.upload = upload
        # PyTorch's CPU thread count is per thread (OpenMP): the worker takes the caller's (the app's
        # --threads), as `keep restore` runs with its own; a different count sums in another order
        self.threads = threads or torch.get_num_threads()
        self.settings = settings
        self.folder = Path(run_folder)
        self.limits = limits
        self.models = models
        self.device_name = device
        self.state = "queued"            # queued -> waiting (device busy) -> running -> done | failed | cancelled
        self.error: Optional[str] = None
        self.result: Optional[RunResult] = None
        self._progress = Progress()
        self._started = 0.0
        self._cancel = threading.Event()
        self._finished = threading.Event()
        self._thread: Optional[threading.Thread] = None

    # ---------------------------------------------------------------- control
    def start(self) -> "RestoreJob":
        self._thread = threading.Thread(target=self._work, name="keep-demo-restore", daemon=True)
        self._thread.start()
        return self

    def run(self) -> "RestoreJob":
        """Run in the calling thread (tests, scripts)."""
        self._work()
        return self

    def cancel(self) -> None:
        self._cancel.set()

    def wait(self, timeout: Optional[float] = None) -> bool:
        """True once the worker has finished (and cleaned up after a cancel or a failure)."""
        return self._finished.wait(timeout)

    @property
    def finished(self) -> bool:
        return self._finished.is_set()

    def progress(self) -> Progress:
        p = self._progress
        seconds = time.perf_counter() - self._started if self.state == "running" else p.seconds
        return Progress(p.frames, p.total, p.faces, seconds)

    # ---------------------------------------------------------------- worker
    def _work(self) -> None:
        torch.set_num_threads(self.threads)
        try:
            self.result = self._restore()
            self.state = "done"
        except Cancelled:
            self.state = "cancelled"
        except EXPECTED as err:
            self.state, self.error = "failed", self._readable(err)
        except Exception as err:   # a bug: the page gets one line, the console the traceback
            log.exception("keep demo: restoration failed")
            self.state = "failed"
            self.error = f"internal error ({type(err).__name__}: {self._readable(err)}); the server console has the details"
        finally:
            if self.state != "done":
                shutil.rmtree(self.folder, ignore_errors=True)
            self._finished.set()

    def _restore(self) -> RunResult:
        source = prepare_input(self.upload, self.folder, self.limits)
        self._input = source
        info = check_length(source, self.limits)
        device = resolve_device(self.device_name)
        self.state = "waiting"
        lock = device_lock(device)
        while not lock.acquire(timeout=0.2):
            self._check_cancel()
        try:
            self._check_cancel()
            self.state, self._started = "running", time.perf_counter()
            self._progress = Progress(total=info.frame_count)
            if not self.models.download:
                self._require_helper_weights()
            net = self.models.get(self.settings.weights_source, device)
            options = self.settings.options(self.folder / "output", str(device))
            # each run sets its CUDA precision once at its start (keep.precision): nothing to undo after it
            summary = VideoRestorer(options, net=net).run(source, on_frame=self._on_frame)
            self._progress.seconds = time.perf_counter() - self._started
        finally:
            lock.release()
        return self._collect(summary, info.fps)

    def _require_helper_weights(self) -> None:
        """With --no-download, the detector's and the upsampler's files must be there already: the
        pipeline would fetch them (WeightsNotFoundError names where to put each file)."""
        needed = []
        if not self.settings.aligned and self.settings.detector == "retinaface":
            needed.append("retinaface-resnet50")
        if self.settings.bg_upsampler:
            needed.append("realesrgan-x2")
        for name in needed:
            get_weight(name, download=False)

    def _on_frame(self, summary: RunSummary, total: Optional[int]) -> None:
        self._check_cancel()
        if summary.frames > self.limits.max_frames:
            raise InputError(too_long(summary.input.name, f"more than {self.limits.max_frames} frames", self.limits))
        faces = summary.frames if self.settings.aligned else summary.detections
        self._progress = Progress(summary.frames, total, faces, time.perf_counter() - self._started)

    def _check_cancel(self) -> None:
        if self._cancel.is_set():
            raise Cancelled()

    def _collect(self, summary: RunSummary, fps) -> RunResult:
        out = self.folder / "output"
        name = summary.output.stem
        extras = out / name
        faces_zip = None
        faces_dir = extras / "restored_faces"
        if faces_dir.is_dir() and any(faces_dir.iterdir()):
            faces_zip = _zip_folder(faces_dir, out / f"{name}_faces.zip")
        input_frames = self.folder / "input_frames"
        extract_input_frames(self._input, input_frames, self._check_cancel)
        text = (summary.describe(self.settings.aligned).replace(str(summary.input), summary.input.name)
                .replace(str(summary.output), summary.output.name))
        return RunResult(folder=self.folder, name=name, video=summary.output,
                         compare=summary.output.with_name(f"{name}_compare.mp4"), faces_zip=faces_zip,
                         frames=summary.frames, fps=float(fps), aligned=self.settings.aligned,
                         input_frames=input_frames, output_frames=extras / "final_frames",
                         crops=extras / "cropped_faces", faces=faces_dir,
                         summary=f"{text}\n  settings: {self.settings.describe()}")

    def _readable(self, err: BaseException) -> str:
        """The message without the server's folders: uploads (the video, a checkpoint) and runs are named
        by their file name, and any other absolute path (the weights folder, a temporary) by its last part."""
        text = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
        checkpoint = Path(self.settings.checkpoint) if self.settings.checkpoint else None
        for path in (getattr(self, "_input", None), Path(self.upload) if self.upload else None, checkpoint):
            if path is not None:
                text = text.replace(str(path), path.name)
        return server_folders_hidden(text.replace(str(self.folder) + "/", ""))


#: An absolute path's folders: "/" + name, repeated, then "/"; not inside a URL ("https://a/b": the slashes
#: follow ":" / "/" or a name) nor a relative path.
_SERVER_FOLDERS = re.compile(r"(?<![\w:/.~-])(?:/[^\s/]+)+/")


def server_folders_hidden(text: str) -> str:
    """``text`` with every absolute path cut to its last part (``/srv/x/w/a.pth`` -> ``a.pth``)."""
    return _SERVER_FOLDERS.sub("", text)


def settings_from(values: Dict) -> DemoSettings:
    """DemoSettings from a mapping, refusing unknown names (the page and tests build it by name)."""
    known = {f.name for f in fields(DemoSettings)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise KeyError(f"unknown demo setting(s): {', '.join(unknown)}")
    return DemoSettings(**values)


def _zip_folder(folder: Path, dest: Path) -> Path:
    """Zip the files of ``folder`` into ``dest`` (temp name + rename: never a half-written zip)."""
    part = dest.with_name(f".{dest.name}.partial")
    with zipfile.ZipFile(part, "w", compression=zipfile.ZIP_STORED) as zf:   # PNGs are compressed already
        for file in sorted(folder.iterdir()):
            zf.write(file, arcname=f"{folder.parent.name}_faces/{file.name}")
    part.replace(dest)
    return dest


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"
