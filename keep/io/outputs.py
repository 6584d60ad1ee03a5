"""The one output-safety rule every ``keep`` command that writes follows (docs/outputs.md).

1. **Inputs are never outputs.** An output (file or folder) that resolves to an input, lies inside an
   input folder, or is a folder that contains an input is refused before any work, whatever the
   spelling (``d/../d/c.mp4``, a symlink, a hard link, a bind mount): paths are compared resolved
   and by (device, inode), never as strings. A symlink loop is a one-line error.
2. **Only what the command made is replaced or deleted.** A folder a command writes carries a marker
   file (:data:`MARKER`) naming the command; a folder without it is the user's and is never deleted
   or replaced, not even with ``--overwrite``. Folders are built under a hidden temporary name and
   swapped in whole (:class:`StagedFolder`), so ``--overwrite`` leaves no stale extras behind.
3. **One writer per output.** :class:`OutputLock` is a file created with ``O_CREAT | O_EXCL`` holding
   the owner's pid; a second run on the same output is refused with one line. A lock whose process
   is gone (same host) is taken over with a note. Temporaries are only cleaned up under the lock,
   so a run never deletes another live run's temporary as left over.
"""
from __future__ import annotations

import errno
import os
import shutil
import socket
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator, List, Optional, Tuple

from keep.io.errors import InputError

#: the file inside a folder a keep command wrote; its first line names the command
MARKER = ".keep-output"


# ----------------------------------------------------------------------------------------- paths
def resolved(path: Path) -> Path:
    """``path`` made absolute with every symlink and ``..`` resolved (missing tails kept as given).
    A symlink loop is an :class:`InputError` (Python raises RuntimeError or OSError, by version)."""
    try:
        return Path(path).expanduser().resolve()
    except (RuntimeError, OSError) as err:
        raise InputError(f"{path}: a symbolic link on this path points back to itself (a loop); fix or "
                         f"remove the link") from err


def _identity(path: Path) -> Optional[Tuple[int, int]]:
    try:
        info = os.stat(path)
    except OSError:   # absent (an output not written yet), or unreadable
        return None
    return info.st_dev, info.st_ino


def _inside_or_same(child: Path, parent: Path) -> bool:
    """True when ``child`` is ``parent`` or lies somewhere under it (resolved paths, and (device,
    inode) of every existing ancestor: catches hard links and bind mounts that paths do not show)."""
    child, parent = resolved(child), resolved(parent)
    target = _identity(parent)
    for folder in (child, *child.parents):
        if folder == parent or (target is not None and _identity(folder) == target):
            return True
    return False


def same_file(a: Path, b: Path) -> bool:
    """True when two paths name one file or folder (resolved, or the same inode)."""
    if resolved(a) == resolved(b):
        return True
    ia, ib = _identity(a), _identity(b)
    return ia is not None and ia == ib


def refuse_overlap(inputs: Iterable[Path], outputs: Iterable[Path], root: Optional[Path] = None,
                   fix: str = "choose another output (-o)") -> None:
    """Raise :class:`InputError` if an output resolves to an input, lies inside an input, or (a
    folder) contains one. ``root`` is the output folder the outputs go in: it may contain the inputs
    (``keep restore clip.mp4 -o .``) but may neither be an input nor lie inside an input folder."""
    inputs = [Path(p) for p in inputs]
    for out in outputs:
        for source in inputs:   # the most precise message first: the very file, then inside, then around
            if same_file(out, source):
                raise InputError(f"the output {out} would replace the input {source}; inputs are never written over (not "
                                 f"even with --overwrite): {fix}")
        for source in inputs:
            if os.path.isdir(source) and _inside_or_same(out, source):
                raise InputError(f"the output {out} lies inside the input {source}; inputs are never written "
                                 f"into: {fix}")
            if _inside_or_same(source, out):
                raise InputError(f"the output {out} contains the input {source}; replacing it would delete the "
                                 f"input: {fix}")
    if root is not None:
        for source in inputs:
            if os.path.isdir(source) and _inside_or_same(root, source):
                kind = "is" if same_file(root, source) else "lies inside"
                raise InputError(f"the output folder {root} {kind} the input {source}; inputs are never written "
                                 f"into: {fix}")


# ------------------------------------------------------------------------------------- ownership
def is_owned(folder: Path, command: Optional[str] = None) -> bool:
    """True when ``folder`` is a real folder (not a link) holding the MARKER of a keep command (of
    ``command`` when given: one command never replaces another's folder)."""
    folder, marker = Path(folder), Path(folder) / MARKER
    if not folder.is_dir() or folder.is_symlink() or not marker.is_file() or marker.is_symlink():
        return False
    if command is None:
        return True
    try:
        return marker.read_text().splitlines()[:1] == [command]
    except (OSError, UnicodeDecodeError):
        return False


def mark_owned(folder: Path, command: str) -> None:
    (Path(folder) / MARKER).write_text(f"{command}\nwritten by {command}; it may replace this folder whole\n")


def _empty_folder(path: Path) -> bool:
    """A real, empty folder: nothing in it to lose, so an output may take its place."""
    return path.is_dir() and not path.is_symlink() and not any(path.iterdir())


def refuse_foreign(paths: Iterable[Path], command: str) -> None:
    """Refuse (before any work) folders in the way of outputs that ``command`` did not write (an empty
    folder is not in the way)."""
    foreign = [Path(p) for p in paths
               if os.path.lexists(p) and not is_owned(p, command) and not _empty_folder(Path(p))]
    if foreign:
        more = f" (and {len(foreign) - 1} more)" if len(foreign) > 1 else ""
        raise InputError(f"{foreign[0]}{more} is in the way of an output and was not made by {command} (no "
                         f"{MARKER} marker inside), so it is left alone: move it away or choose another -o")


def remove_owned(folder: Path, command: str) -> bool:
    """Delete ``folder`` if ``command`` made it (its MARKER); returns whether it did."""
    if is_owned(folder, command):
        shutil.rmtree(folder)
        return True
    return False


class StagedFolder:
    """An output folder built under the hidden name ``.<name>.tmp`` beside ``dest`` and swapped in
    whole by :meth:`commit`: ``dest`` is complete or absent, and a replaced result leaves no stale
    files. Call only under the output's lock (a leftover ``.<name>.tmp`` is then a killed run's)."""

    def __init__(self, dest: Path, command: str):
        self.dest = Path(dest)
        self.command = command
        self.path = self.dest.parent / f".{self.dest.name}.tmp"
        if os.path.lexists(self.path) and not remove_owned(self.path, command):
            raise InputError(f"{self.path} is in the way (a temporary name of {command}) and was not made by it; "
                             f"move it away")
        self.path.mkdir(parents=True)
        mark_owned(self.path, command)

    def commit(self, replace: bool) -> Path:
        """Move the staged folder onto ``dest``. An existing ``dest`` is replaced only when ``replace``
        and it was made by a keep command; otherwise :class:`InputError` (and the staging is kept
        until :meth:`abort`)."""
        if _empty_folder(self.dest):
            self.dest.rmdir()
        if os.path.lexists(self.dest):
            refuse_foreign([self.dest], self.command)
            if not replace:
                raise InputError(f"{self.dest} already exists; pass --overwrite to replace it")
            aside = self.dest.parent / f".{self.dest.name}.old"
            if os.path.lexists(aside) and not remove_owned(aside, self.command):
                raise InputError(f"{aside} is in the way and was not made by {self.command}; move it away")
            os.replace(self.dest, aside)
            os.replace(self.path, self.dest)
            shutil.rmtree(aside, ignore_errors=True)
        else:
            os.replace(self.path, self.dest)
        return self.dest

    def abort(self) -> None:
        if is_owned(self.path, self.command):
            shutil.rmtree(self.path, ignore_errors=True)


class FrameFolderWriter(StagedFolder):
    """Frames written one by one as ``dest/00000000.png ...`` into the staging folder; :meth:`commit`
    swaps it onto ``dest``, replacing a folder of the same command left unfinished (no record yet),
    never one it did not make. For the resumable commands (degrade, prepare, prepare-vfhq), which only
    write what their records do not show as done."""

    def __init__(self, dest: Path, command: str):
        super().__init__(dest, command)
        self.count = 0

    def add(self, frame) -> None:
        import cv2
        path = self.path / f"{self.count:08d}.png"
        if not cv2.imwrite(str(path), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)):
            raise OSError(f"could not write {path}")
        self.count += 1

    def commit(self, replace: bool = True) -> Path:
        return super().commit(replace)


# ------------------------------------------------------------------------------------------ lock
def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:   # another user's live process
        return True
    return True


class OutputLock:
    """``path`` created with O_CREAT | O_EXCL, holding ``pid host command``; removed by :meth:`release`.

    A second run on the same output is refused (InputError, one line). A lock left by a process that
    no longer runs on this host (``kill -9``, power cut) is taken over, and :attr:`note` says so."""

    def __init__(self, path: Path, command: str, target: Optional[Path] = None):
        self.path = Path(path)
        self.command = command
        self.target = Path(target) if target is not None else self.path
        self.note: Optional[str] = None
        self.held = False

    @classmethod
    def inside(cls, folder: Path, command: str) -> "OutputLock":
        """The lock of a whole output folder: ``folder/.keep-lock``."""
        return cls(Path(folder) / ".keep-lock", command, folder)

    @classmethod
    def beside(cls, output: Path, command: str) -> "OutputLock":
        """The lock of one output file or folder: ``.<name>.keep-lock`` next to it."""
        output = Path(output)
        return cls(output.parent / f".{output.name}.keep-lock", command, output)

    def _owner(self) -> Tuple[Optional[int], str, str]:
        try:
            pid, host, command = (self.path.read_text().split(" ", 2) + ["", ""])[:3]
            return int(pid), host, command.strip()
        except (OSError, ValueError):
            return None, "", ""

    def acquire(self) -> "OutputLock":
        for _ in range(2):
            try:
                handle = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                pid, host, command = self._owner()
                if pid is not None and host == socket.gethostname() and not _alive(pid):
                    self.path.unlink(missing_ok=True)
                    self.note = f"took over the lock of {self.target} left by {command or 'a run'} (pid {pid}), " \
                                f"which no longer runs"
                    continue
                who = f"{command or 'another keep command'} (pid {pid}{'' if host == socket.gethostname() else ' on ' + host})" \
                    if pid is not None else "another keep command"
                raise InputError(f"{self.target} is being written by {who}; wait for it to finish or choose "
                                 f"another output (if no such run is going on, delete {self.path})") from None
            with os.fdopen(handle, "w") as out:
                out.write(f"{os.getpid()} {socket.gethostname()} {self.command}\n")
            self.held = True
            return self
        raise InputError(f"cannot take the lock {self.path}; delete it if no keep command is running")

    def release(self) -> None:
        if self.held:
            pid, _, _ = self._owner()
            if pid == os.getpid():
                self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> "OutputLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


class Locks:
    """Several locks taken together (all or none) and released together."""

    def __init__(self):
        self.held: List[OutputLock] = []

    def take(self, lock: OutputLock) -> OutputLock:
        lock.acquire()
        self.held.append(lock)
        return lock

    def release(self) -> None:
        while self.held:
            self.held.pop().release()


# ---------------------------------------------------------------------------------------- folders
class MadeFolders:
    """Folders this run creates (``mkdir -p``), removed again by :meth:`remove_if_empty` when the run
    wrote nothing into them, so a failed run leaves no empty folder behind (deepest first)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.created: List[Path] = []

    def make(self) -> Path:
        missing, parent = [], self.path
        while not os.path.lexists(parent) and parent != parent.parent:
            missing.append(parent)
            parent = parent.parent
        if not parent.is_dir():   # an OSError: the commands report it as "cannot write" with the reason
            raise NotADirectoryError(errno.ENOTDIR, f"{parent} is {'a file' if parent.exists() else 'not a folder'}, "
                                                    f"so no folder can be made there; give another path", str(self.path))
        self.created = missing    # before mkdir: it may fail half-way with some folders made
        self.path.mkdir(parents=True, exist_ok=True)
        return self.path

    def remove_if_empty(self) -> None:
        for folder in self.created:
            if not os.path.isdir(folder):   # never made: mkdir failed before it
                continue
            try:
                folder.rmdir()              # only succeeds when empty
            except OSError:
                break


@contextmanager
def claimed_folder(output: Path, command: str, inputs: Iterable[Path] = (),
                   outputs: Iterable[Path] = ()) -> Iterator[OutputLock]:
    """The ``-o`` folder of a command that writes a whole tree (degrade, prepare, prepare-vfhq, eval):
    refused if it (or one of ``outputs`` in it) overlaps an input; made if absent (and removed again
    if the run leaves it empty); locked against a second run for the duration of the block."""
    inputs = list(inputs)
    refuse_overlap(inputs, list(outputs), root=output, fix="choose another output folder (-o)")
    made = MadeFolders(output)
    try:
        made.make()
        lock = OutputLock.inside(output, command).acquire()
    except BaseException:
        made.remove_if_empty()
        raise
    try:
        if lock.note:
            print(f"note: {lock.note}", file=sys.stderr)
        yield lock
    finally:
        lock.release()
        made.remove_if_empty()


# ------------------------------------------------------------------------------------------ errors
def is_disk_full(err: BaseException) -> bool:
    return isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT)


def describe_input_kind(path: Path) -> Optional[str]:
    """Why ``path`` (which exists) is neither a regular file nor a folder, or None when it is one."""
    import stat
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    kind = ("a named pipe (FIFO)" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode)
            else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a regular file")
    return f"{path} is {kind}, not a video file or a folder"
