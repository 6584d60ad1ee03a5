"""Checks of a ``keep restore`` run made before any model is loaded or any frame is restored.

Everything a user can get wrong about inputs and outputs is found here, in seconds, instead of
after minutes of restoration: unreadable inputs, an output folder that cannot be written, an
output that would replace an input (whatever the path spelling: relative, symlinked, hard-linked),
two inputs of a batch that would write the same file (``x.mp4`` and ``x.mkv``). Temporary files a
killed run left behind (``kill -9``: no handler runs) are removed here too.
"""
from __future__ import annotations

import os
import sys
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from keep.io import outputs
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


def check_outputs(planned: List[PlannedInput], output_dir: Path, compare: bool, extras: bool = False) -> None:
    """Refuse a run where an output would replace, lie inside or contain an input (always, even with
    --overwrite; keep/io/outputs.py) or where two inputs would write the same output. ``extras``: the
    run writes ``OUTDIR/<name>/`` folders too (--save-faces ...)."""
    inputs = [p.path for p in planned]
    writers: Dict[Path, PlannedInput] = {}
    for item in planned:
        written = item.outputs(output_dir, compare) + ([item.extras_dir(output_dir)] if extras else [])
        outputs.refuse_overlap(inputs, written, root=output_dir, fix="choose another output folder (-o)")
        for out in written:
            key = outputs.resolved(out)
            if key in writers:
                raise InputError(f"{writers[key].path} and {item.path} would both write {out}; rename one of "
                                 f"them or restore them in separate runs")
            writers[key] = item


def claim(items: List[PlannedInput], output_dir: Path) -> outputs.Locks:
    """Lock every planned output of this run (``OUTDIR/.<name>.mp4.keep-lock``), so a second restore into
    the same names is refused while this one runs; raises InputError (no lock kept) if one is taken."""
    locks = outputs.Locks()
    try:
        for item in items:
            lock = locks.take(outputs.OutputLock.beside(item.outputs(output_dir, False)[0], "keep restore"))
            if lock.note:
                print(f"note: {lock.note}", file=sys.stderr)
    except BaseException:
        locks.release()
        raise
    return locks


def remove_stale_partials(item: PlannedInput, output_dir: Path) -> List[Path]:
    """Remove the temporaries of ``item``'s videos (``.<name>.partial.mp4``, ``.<name>_compare.partial.mp4``)
    that an earlier run killed with ``kill -9`` left behind; returns those removed.

    Only those exact names go, never a file merely alike (``<name>.partial.mp4``, ``.<name>.partial.mov``)
    nor a folder. A symlink there is removed, not followed: the writer would otherwise write through it
    into the file it points to (unlinking a link never touches its target). Call only while holding the
    item's lock (:func:`claim`): a live run's temporary is then never taken for a leftover."""
    removed = []
    for out in item.outputs(output_dir, compare=True):
        temporary = partial_path(out)
        if temporary.is_symlink() or temporary.is_file():
            temporary.unlink()
            removed.append(temporary)
    return removed


def existing_outputs(item: PlannedInput, output_dir: Path, compare: bool, extras: bool = False) -> List[Path]:
    """The outputs of ``item`` already there (the extras folder too when the run writes one: it must
    be keep restore's own, else InputError)."""
    found = [p for p in item.outputs(output_dir, compare) if p.exists()]
    if extras and os.path.lexists(item.extras_dir(output_dir)):
        outputs.refuse_foreign([item.extras_dir(output_dir)], "keep restore")
        found.append(item.extras_dir(output_dir))
    return found


def check_input(item: PlannedInput, fps: Optional[Fraction]) -> None:
    """Open the input and decode its first frame (raises :class:`InputError` with the reason)."""
    with open_source(item.path, fps):
        pass


class OutputFolder:
    """The ``-o`` folder: made and probed for writing before the work starts; removed again at the end
    if this run made it and nothing was written into it (a failed run leaves no empty folder)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.made = outputs.MadeFolders(self.path)

    def prepare(self) -> None:
        path = self.path
        if path.exists() and not path.is_dir():
            raise InputError(f"-o {path} is a file, not a folder; give a folder for the results")
        try:
            self.made.make()
            handle, probe = tempfile.mkstemp(prefix=".keep-write-test-", dir=path)
            os.close(handle)
            os.unlink(probe)
        except OSError as err:
            self.remove_if_empty()
            raise InputError(f"cannot write to the output folder {path} ({err.strerror or err}); choose another "
                             f"-o or fix its permissions") from err

    def remove_if_empty(self) -> None:
        self.made.remove_if_empty()


class Extras:
    """``OUTDIR/<name>/`` (``--save-faces`` and friends) of one input: built in a hidden staging folder and
    swapped in whole when the input succeeds (``--overwrite`` leaves none of the previous run's PNGs),
    discarded when it fails. Without --save-* flags, ``--overwrite`` removes a previous run's folder
    (marked as keep restore's), so the result is the new run's alone."""

    def __init__(self, folder: Path, wanted: bool):
        self.folder = Path(folder)
        self.staged = outputs.StagedFolder(self.folder, "keep restore") if wanted else None

    @property
    def path(self) -> Optional[Path]:
        return self.staged.path if self.staged is not None else None

    def commit(self, overwrite: bool) -> None:
        if self.staged is not None:
            self.staged.commit(replace=overwrite)
        elif overwrite:
            outputs.remove_owned(self.folder, "keep restore")

    def discard(self) -> None:
        if self.staged is not None:
            self.staged.abort()


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


def check_model_files(options, download: bool = True) -> None:
    """Every file the run will read, checked before any network is loaded: the KEEP weights (a path or a
    registry name), the detector's, the paste-back mask's and the upsampler's. Missing registry files are
    fetched (``download``) only once nothing unfetchable is missing; whatever is still missing is reported
    in one :class:`WeightsNotFoundError`, with ``--detector dlib`` offered when RetinaFace is among it
    (so an offline user is not sent through one failure after another, each after a model load)."""
    from keep.restore.needs import dlib_models_problem, restore_needs
    from keep.weights import WEIGHTS, WeightsNotFoundError, get_weight

    problems: List[str] = []
    weights = str(options.weights)
    if weights not in WEIGHTS and not Path(weights).is_file():
        problems.append(f"--weights {weights}: checkpoint not found (give a checkpoint path or a registry name: "
                        f"`keep download --list`)")
    elif Path(weights).is_file():
        # structure only (keep/torch_file.py): an empty file, an HTML page or an inflating zip is named
        # here, with everything else that is missing, instead of after the other models have loaded
        from keep.checkpoint import CheckpointError
        from keep.torch_file import inspect_torch_file
        try:
            inspect_torch_file(weights)
        except CheckpointError as err:
            problems.append(f"--weights: {err}")
    if options.detector == "dlib" and not options.aligned:
        problem = dlib_models_problem()
        if problem:
            problems.append(f"--detector dlib: {problem}")
    required = [need for need in restore_needs(weights, options.detector, options.mask, options.aligned,
                                               options.bg_upsampler, options.face_upsample, options.upscale)
                if need.required]
    missing = []
    for need in required:
        try:
            get_weight(need.name, download=False)
        except WeightsNotFoundError as err:
            missing.append((need, err))
    # fetch only when every other file is there: a run that cannot start downloads nothing
    fetchable = all(WEIGHTS[need.name].published for need, _ in missing)
    if download and fetchable and not problems:
        still = []
        for need, _ in missing:
            try:
                get_weight(need.name, download=True, progress=options.progress)
            except WeightsNotFoundError as err:
                still.append((need, err))
        missing = still
    problems += [f"{need.name} ({need.why}): {err}" for need, err in missing]
    if not problems:
        return
    lines = [f"{len(problems)} file(s) this run needs are missing or unusable; nothing was loaded:"]
    lines += [f"  - {problem}" for problem in problems]
    if any(need.name == "retinaface-resnet50" for need, _ in missing):
        lines.append("  or detect faces with --detector dlib instead: its models come from PyPI (installed with "
                     "keep), nothing to download")
    raise WeightsNotFoundError("\n".join(lines))
