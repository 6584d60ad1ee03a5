"""Checks of a ``keep restore`` run made before any model is loaded or any frame is restored.

Everything a user can get wrong about inputs and outputs is found here, in seconds, instead of
after minutes of restoration: unreadable inputs, an output folder that cannot be written, an
output that would replace an input (whatever the path spelling: relative, symlinked, hard-linked),
two inputs of a batch that would write the same file (``x.mp4`` and ``x.mkv``). Temporary files a
killed run left behind (``kill -9``: no handler runs) are removed here too.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from keep.io.errors import InputError
from keep.io.source import input_name, open_source
from keep.io.writer import final_path, partial_path


@dataclass
class PlannedInput:
    """One input of the run and the files it will write."""
    path: Path
    name: str                     # output stem: OUTDIR/<name>.mp4, OUTDIR/<name>_compare.mp4, OUTDIR/<name>/
    notes: List[str] = field(default_factory=list)   # told at the start and in the summary

    def outputs(self, output_dir: Path, compare: bool) -> List[Path]:
        files = [Path(output_dir) / f"{self.name}.mp4"]
        if compare:
            files.append(Path(output_dir) / f"{self.name}_compare.mp4")
        return files

    def extras_dir(self, output_dir: Path) -> Path:
        return Path(output_dir) / self.name


def plan_names(inputs: List[Path]) -> List[PlannedInput]:
    """Output names for a batch: each input's own name, unless several inputs share it (``x.mp4`` and
    ``x.mkv`` both give ``x``); those get their extension appended (``x_mp4``, ``x_mkv``) so no
    output replaces another. Names that still clash are refused."""
    planned = [PlannedInput(Path(p), input_name(p)) for p in inputs]
    groups: Dict[str, List[PlannedInput]] = defaultdict(list)
    for item in planned:
        groups[item.name].append(item)
    for name, members in groups.items():
        if len(members) < 2:
            continue
        sources = ", ".join(m.path.name for m in members)
        for item in members:
            item.name = f"{name}_{item.path.suffix.lstrip('.')}" if item.path.suffix else f"{name}_{item.path.name}"
            item.notes.append(f"written as {item.name}.mp4: {sources} share the name '{name}' in this batch")
    return planned


def _same_file(a: Path, b: Path) -> bool:
    """True when two paths name one file: equal after resolving symlinks and '..', or the same inode."""
    if a.resolve() == b.resolve():
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:   # one of them does not exist (yet)
        return False


def check_outputs(planned: List[PlannedInput], output_dir: Path, compare: bool) -> None:
    """Refuse a run where an output would replace an input (always, even with --overwrite) or where
    two inputs would write the same output."""
    input_files = [p.path for p in planned if p.path.is_file()]
    writers: Dict[Path, PlannedInput] = {}
    for item in planned:
        for out in item.outputs(output_dir, compare):
            for source in input_files:
                if _same_file(out, source):
                    raise InputError(f"the output {out} would replace the input {source}; inputs are never "
                                     f"overwritten (not even with --overwrite): choose another output folder (-o)")
            key = out.resolve()
            if key in writers:
                raise InputError(f"{writers[key].path} and {item.path} would both write {out}; rename one of "
                                 f"them or restore them in separate runs")
            writers[key] = item


def remove_stale_partials(item: PlannedInput, output_dir: Path) -> List[Path]:
    """Remove the temporaries of ``item``'s videos (``.<name>.partial.mp4``, ``.<name>_compare.partial.mp4``)
    that an earlier run killed with ``kill -9`` left behind; returns those removed.

    Only those exact names go, never a file merely alike (``<name>.partial.mp4``, ``.<name>.partial.mov``)
    nor a folder. A symlink there is removed, not followed: the writer would otherwise write through it
    into the file it points to (unlinking a link never touches its target). Assumes no other ``keep
    restore`` is writing the same output at the same time (its temporary would go)."""
    removed = []
    for out in item.outputs(output_dir, compare=True):
        temporary = partial_path(out)
        if temporary.is_symlink() or temporary.is_file():
            temporary.unlink()
            removed.append(temporary)
    return removed


def existing_outputs(item: PlannedInput, output_dir: Path, compare: bool) -> List[Path]:
    return [p for p in item.outputs(output_dir, compare) if p.exists()]


def check_input(item: PlannedInput, fps: Optional[Fraction]) -> None:
    """Open the input and decode its first frame (raises :class:`InputError` with the reason)."""
    with open_source(item.path, fps):
        pass


class OutputFolder:
    """The ``-o`` folder: made and probed for writing before the work starts; removed again at the end
    if this run made it and nothing was written into it (a failed run leaves no empty folder)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.created: List[Path] = []     # folders this run made, deepest first

    def prepare(self) -> None:
        path = self.path
        if path.exists() and not path.is_dir():
            raise InputError(f"-o {path} is a file, not a folder; give a folder for the results")
        missing, parent = [], path
        while not parent.exists() and parent != parent.parent:
            missing.append(parent)
            parent = parent.parent
        if not parent.is_dir():
            raise InputError(f"-o {path}: {parent} is a file, so the output folder cannot be made there; "
                             f"give another folder")
        self.created = missing    # before mkdir: it may fail half-way (a name too long) with folders made
        try:
            path.mkdir(parents=True, exist_ok=True)
            handle, probe = tempfile.mkstemp(prefix=".keep-write-test-", dir=path)
            os.close(handle)
            os.unlink(probe)
        except OSError as err:
            self.remove_if_empty()
            raise InputError(f"cannot write to the output folder {path} ({err.strerror or err}); choose another "
                             f"-o or fix its permissions") from err

    def remove_if_empty(self) -> None:
        for folder in self.created:
            if not os.path.isdir(folder):   # never made: mkdir failed before it (os.path: no raise)
                continue
            try:
                folder.rmdir()            # only succeeds when empty
            except OSError:
                break


class ExtrasGuard:
    """``OUTDIR/<name>/`` (``--save-faces`` and friends): removed when the run of that input fails or is
    interrupted, if this run made it, so no partial set of PNGs passes for a result."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.existed = self.folder.exists()

    def discard(self) -> None:
        if not self.existed and self.folder.is_dir():
            shutil.rmtree(self.folder, ignore_errors=True)


def describe_os_error(err: OSError) -> str:
    """One line for an OSError (disk full, permission, missing folder) naming the file involved."""
    if err.strerror and err.filename:
        # a video is written under a temporary name; the user knows the file by its final one
        name = final_path(Path(str(err.filename))) or err.filename
        return f"cannot read or write {name}: {err.strerror}"
    return str(err)


def split_checked(planned: List[PlannedInput], fps: Optional[Fraction]) -> Tuple[List[PlannedInput],
                                                                              List[Tuple[PlannedInput, str]]]:
    """(inputs that open and decode, [(input, reason)] for those that do not)."""
    good, bad = [], []
    for item in planned:
        try:
            check_input(item, fps)
        except InputError as err:
            bad.append((item, str(err)))
        else:
            good.append(item)
    return good, bad
