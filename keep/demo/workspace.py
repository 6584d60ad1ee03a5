"""The demo's working folder, its sessions, and what an upload must satisfy before a run starts.

Everything the app writes lives under one folder it creates (``keep-demo-XXXX``, a fresh temporary
folder, inside ``--workdir`` when one is given, so that no file that was already there is ever served):

    <root>/<hash>/<name>            uploads, as Gradio stores them (GRADIO_TEMP_DIR points at <root>)
    <root>/sessions/<session>/run-N one restoration: outputs, PNGs for the frame viewer, extracted zip

Gradio serves files that lie inside its upload folder without copying them, so the run folders are
shown in place: a folder of the user's is therefore never the root (its files would be served). A
session's folder and its uploads are removed when its page is closed; when the app stops, the whole
root is removed (Gradio's own scratch files included), and --workdir too if the app made it.
"""
from __future__ import annotations

import shutil
import tempfile
import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Dict, List, Optional

from keep.io.errors import InputError
from keep.io.images import IMAGE_SUFFIXES
from keep.io.outputs import MadeFolders
from keep.io.source import VIDEO_SUFFIXES, SourceInfo, open_source

UPLOAD_SUFFIXES = VIDEO_SUFFIXES + (".zip",)


@dataclass(frozen=True)
class Limits:
    """What one upload may be: checked before a run and again while it decodes."""
    max_upload_mb: float = 200.0
    max_frames: int = 1200
    max_seconds: float = 120.0

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)


class Session:
    """One browser tab (Gradio session): its folder, its current job, its latest result."""

    def __init__(self, key: str, folder: Path):
        self.key = key
        self.folder = folder
        self.uploads: List[Path] = []     # upload files this session handed to us
        self.job = None                   # the RestoreJob running or last run (keep.demo.job)
        self.result = None                # the RunResult shown in the page
        self._runs = 0
        self._lock = threading.Lock()

    def new_run_folder(self) -> Path:
        """A fresh ``run-N`` folder; the previous run's folder is removed (a page shows one result)."""
        with self._lock:
            if self.result is not None:
                shutil.rmtree(self.result.folder, ignore_errors=True)
                self.result = None
            self._runs += 1
            folder = self.folder / f"run-{self._runs}"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        return folder

    def remember_upload(self, path: Optional[str]) -> None:
        if path:
            with self._lock:
                if Path(path) not in self.uploads:
                    self.uploads.append(Path(path))


class Workspace:
    """The app's working folder and its sessions (thread-safe)."""

    def __init__(self, workdir: Optional[Path] = None):
        self._made = None
        if workdir is not None:   # keep/io/outputs.py: the app's own folder inside it, the rest never touched
            self._made = MadeFolders(Path(workdir).expanduser())
            self._made.make()
        self.root = Path(tempfile.mkdtemp(prefix="keep-demo-", dir=workdir)).resolve()
        self.sessions_dir = self.root / "sessions"
        self._sessions: Dict[str, Session] = {}
        self._lock = threading.Lock()

    def session(self, key: Optional[str]) -> Session:
        key = _safe_key(key or "default")
        with self._lock:
            if key not in self._sessions:
                folder = self.sessions_dir / key
                folder.mkdir(parents=True, exist_ok=True)
                self._sessions[key] = Session(key, folder)
            return self._sessions[key]

    def end_session(self, key: Optional[str]) -> None:
        """Stop the session's job and remove its folder and the uploads it received."""
        with self._lock:
            session = self._sessions.pop(_safe_key(key or "default"), None)
        if session is None:
            return
        if session.job is not None:
            session.job.cancel()
            session.job.wait(timeout=60)   # its worker removes a cancelled run's files itself
        shutil.rmtree(session.folder, ignore_errors=True)
        # Gradio stores an upload by its content's hash: two pages that upload the same file share it,
        # so a file still remembered by another session stays
        with self._lock:
            shared = {path for other in self._sessions.values() for path in other.uploads}
        for upload in session.uploads:
            if upload not in shared:
                self.remove_upload(upload)

    def remove_upload(self, path: Path) -> None:
        """Delete an upload (and the hash folder Gradio put it in), only if it lies in this workspace
        and outside the session folders."""
        path = Path(path).resolve()
        if self.root not in path.parents or path == self.sessions_dir or self.sessions_dir in path.parents:
            return
        if path.parent.parent == self.root:
            shutil.rmtree(path.parent, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)

    def close(self) -> None:
        """End every session and remove what the app wrote."""
        for key in list(self._sessions):
            self.end_session(key)
        shutil.rmtree(self.root, ignore_errors=True)
        if self._made is not None:
            self._made.remove_if_empty()


def _safe_key(key: str) -> str:
    cleaned = "".join(c for c in key if c.isalnum() or c in "-_")[:64]
    return cleaned or "default"


# ---------------------------------------------------------------------------------------------------- uploads
def prepare_input(upload: Optional[str], run_folder: Path, limits: Limits) -> Path:
    """Check an uploaded file and return what :meth:`VideoRestorer.run` reads: the video itself, or
    the frame folder extracted from a zip into ``run_folder/input``."""
    if not upload:
        raise InputError("upload a video (" + ", ".join(VIDEO_SUFFIXES) + ") or a zip of PNG/JPEG frames first")
    path = Path(upload)
    if not path.is_file():
        raise InputError(f"the uploaded file {path.name} is gone; upload it again")
    size = path.stat().st_size
    if size > limits.max_upload_bytes:
        raise InputError(f"{path.name} is {size / 2**20:.0f} MB; this demo accepts uploads up to "
                         f"{limits.max_upload_mb:g} MB (start it with --max-upload-mb to change that)")
    suffix = path.suffix.lower()
    if suffix == ".zip":
        return extract_frames(path, run_folder / "input", limits)
    if suffix not in VIDEO_SUFFIXES:
        raise InputError(f"{path.name}: not a video ({', '.join(VIDEO_SUFFIXES)}) nor a .zip of frames")
    return path


def extract_frames(archive: Path, dest: Path, limits: Limits) -> Path:
    """Extract the image files of a zip (one folder of frames, any depth) into ``dest/<zip stem>``.

    Member names are reduced to their base name (no path from the archive is ever joined), the
    count and the uncompressed size are bounded before anything is written, and the bytes actually
    written are counted (a header may lie)."""
    try:
        with zipfile.ZipFile(archive) as zf:
            members = [m for m in zf.infolist() if not m.is_dir() and _is_frame(m.filename)]
            if not members:
                raise InputError(f"{archive.name} holds no PNG/JPEG frames ({', '.join(IMAGE_SUFFIXES)})")
            names = [PurePosixPath(m.filename.replace("\\", "/")).name for m in members]
            if len(set(names)) != len(names):
                raise InputError(f"{archive.name} holds frames with the same name in several folders; "
                                 f"zip one folder of frames")
            if len(members) > limits.max_frames:
                raise InputError(f"{archive.name} holds {len(members)} frames; this demo restores at most "
                                 f"{limits.max_frames} (start it with --max-frames to change that)")
            budget = 4 * limits.max_upload_bytes
            if sum(m.file_size for m in members) > budget:
                raise InputError(f"{archive.name} expands to more than {budget / 2**20:.0f} MB; zip fewer or "
                                 f"smaller frames")
            folder = dest / (_safe_key(archive.stem) or "frames")
            folder.mkdir(parents=True, exist_ok=True)
            written = 0
            for member, name in zip(members, names):
                with zf.open(member) as src, open(folder / name, "wb") as out:
                    for block in iter(lambda: src.read(1 << 20), b""):
                        written += len(block)
                        if written > budget:
                            raise InputError(f"{archive.name} expands to more than {budget / 2**20:.0f} MB")
                        out.write(block)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, NotImplementedError) as err:
        raise InputError(f"{archive.name} is not a readable zip archive ({err}); zip a folder of PNG/JPEG "
                         f"frames again") from err
    return folder


def _is_frame(name: str) -> bool:
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if any(part.startswith(".") or part == "__MACOSX" for part in parts):
        return False
    return PurePosixPath(name).suffix.lower() in IMAGE_SUFFIXES


def check_length(path: Path, limits: Limits) -> SourceInfo:
    """Open the input once (a corrupt file fails here, with the reader's message) and refuse one
    longer than the limits. The header's frame count may be absent: the run checks again as it goes."""
    with open_source(path) as source:
        info = source.info
    if info.frame_count:
        if info.frame_count > limits.max_frames:
            raise InputError(too_long(info.name, f"{info.frame_count} frames", limits))
        seconds = float(info.frame_count / info.fps)
        if info.kind == "video" and seconds > limits.max_seconds:
            raise InputError(too_long(info.name, f"{seconds:.0f} s", limits))
    return info


def too_long(name: str, length: str, limits: Limits) -> str:
    return (f"{name} is {length} long; this demo restores at most {limits.max_frames} frames and "
            f"{limits.max_seconds:g} s (trim it, or start the demo with --max-frames / --max-seconds)")
