"""Bad-input table for the commands without a table of their own: `keep live`, `degrade`, `prepare`,
`prepare-vfhq`, `download` and `demo` (keep/io/outputs.py's rule: outputs never overlap inputs, only what a
command made is replaced, one run per output; and the one-line errors of issue 20, item 10).

One row per case: ``setup(ws, monkeypatch)`` prepares the workspace and returns the argv; the row names
the exit code and a fragment of the message. For every row: no traceback, the inputs byte for byte
unchanged, and ``check(ws)`` (if any) holds afterwards. Add a case by appending a Case to CASES.
Workspace: ws/inputs/d/c.mp4 (6 frames, 64 px), ws/inputs/gt/clip_a (3 PNG frames, 64 px), the tiny
network at ws/tiny.pth, ws/out (absent).
"""
from __future__ import annotations

import hashlib
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional

import numpy as np
import pytest

from keep.cli import main
from keep.evaluation.clips import write_frames
from keep.io.samples import write_sample_clip

from tiny_models import random_tiny_checkpoint

SIZE = 64
LIVE_LOCK = f"1 {socket.gethostname()} keep live\n"      # pid 1 always runs: a live run holds the lock


@dataclass
class Case:
    id: str
    setup: Callable[[Path, object], List[str]]
    code: int
    message: str
    check: Optional[Callable[[Path], None]] = None


def _live(ws: Path, *argv: str) -> List[str]:
    return ["live", *argv, "--weights", str(ws / "tiny.pth"), "--device", "cpu", "--threads", "1", "--aligned",
            "--no-progress"]


def _clip(ws: Path) -> str:
    return str(ws / "inputs" / "d" / "c.mp4")


def _degrade(ws: Path, out: Path) -> List[str]:
    return ["degrade", "--gt", str(ws / "inputs" / "gt"), "--level", "mild", "-o", str(out)]


# ------------------------------------------------------------------------------------------ live
def live_output_is_input_respelled(ws, _):
    return _live(ws, _clip(ws), "-o", str(ws / "inputs" / "d" / ".." / "d" / "c.mp4"), "--overwrite")


def live_max_latency_inf(ws, _):
    return _live(ws, _clip(ws), "-o", str(ws / "out" / "x.mp4"), "--max-latency", "inf")


def live_second_run_refused(ws, _):
    (ws / "out").mkdir()
    (ws / "out" / ".x.mp4.keep-lock").write_text(LIVE_LOCK)
    return _live(ws, _clip(ws), "-o", str(ws / "out" / "x.mp4"))


def live_output_symlink_loop(ws, _):
    os.symlink(ws / "loop", ws / "loop")
    return _live(ws, _clip(ws), "-o", str(ws / "loop" / "x.mp4"))


def live_disk_full(ws, _):
    os.symlink("/dev/full", ws / "full.ts")     # every write: ENOSPC, as on a full disk
    return _live(ws, _clip(ws), "-o", str(ws / "full.ts"), "--overwrite")


# --------------------------------------------------------------------------------------- degrade
def degrade_output_is_the_gt(ws, _):
    return _degrade(ws, ws / "inputs" / "gt")


def degrade_output_inside_the_gt(ws, _):
    return _degrade(ws, ws / "inputs" / "gt" / "lq")


def degrade_users_folder_in_the_way(ws, _):
    (ws / "out" / "clip_a").mkdir(parents=True)
    (ws / "out" / "clip_a" / "holiday.jpg").write_bytes(b"the user's photo")
    return _degrade(ws, ws / "out")


def _holiday_kept(ws):
    assert (ws / "out" / "clip_a" / "holiday.jpg").read_bytes() == b"the user's photo"
    assert sorted(p.name for p in (ws / "out").iterdir()) == ["clip_a"]


def degrade_second_run_refused(ws, _):
    (ws / "out").mkdir()
    (ws / "out" / ".keep-lock").write_text(f"1 {socket.gethostname()} keep degrade\n")
    return _degrade(ws, ws / "out")


# --------------------------------------------------------------------------------------- prepare
def prepare_output_inside_the_input(ws, _):
    return ["prepare", str(ws / "inputs" / "gt"), "-o", str(ws / "inputs" / "gt" / "dataset"), "--detector", "dlib"]


def prepare_vfhq_output_is_the_input(ws, _):
    # refused before the tree is read (keep/io/outputs.py claimed_folder): any folder stands for the tree
    return ["prepare-vfhq", "--dicface", str(ws / "inputs"), "-o", str(ws / "inputs" / "gt" / "..")]  # respelled


def prepare_vfhq_output_inside_the_frames(ws, _):
    return ["prepare-vfhq", "--frames", str(ws / "inputs" / "gt"), "--annotations", str(ws / "inputs" / "d"),
            "--level", "mild", "-o", str(ws / "inputs" / "gt" / "aligned")]


def prepare_video_without_a_face(ws, _):
    pytest.importorskip("dlib")
    return ["prepare", _clip(ws), "-o", str(ws / "out"), "--detector", "dlib", "--size", "64"]


def _no_training_clip(ws):
    assert not (ws / "out" / "train").exists() and not (ws / "out" / "val").exists()


# -------------------------------------------------------------------------------------- download
def _registered(monkeypatch, url: str):
    from keep.weights import WEIGHTS, WeightFile
    monkeypatch.setitem(WEIGHTS, "test-file", WeightFile("test-file", url, "test-file.bin", "test", "", "a test file"))


def download_failure_leaves_no_folder(ws, monkeypatch):
    _registered(monkeypatch, (ws / "no-such-source.bin").as_uri())
    return ["download", "test-file", "--dir", str(ws / "new" / "weights")]


def _no_new_folder(ws):
    assert not (ws / "new").exists()


def download_dir_is_a_file(ws, monkeypatch):
    _registered(monkeypatch, (ws / "no-such-source.bin").as_uri())
    return ["download", "test-file", "--dir", _clip(ws)]


def weights_dir_variable_is_a_file(ws, monkeypatch):
    _registered(monkeypatch, (ws / "no-such-source.bin").as_uri())
    monkeypatch.setenv("KEEP_WEIGHTS_DIR", _clip(ws))
    return ["download", "test-file"]


def download_second_run_refused(ws, monkeypatch):
    (ws / "source.bin").write_bytes(b"payload")
    _registered(monkeypatch, (ws / "source.bin").as_uri())
    (ws / "w" / "test").mkdir(parents=True)
    (ws / "w" / "test" / ".test-file.bin.keep-lock").write_text(f"1 {socket.gethostname()} keep download\n")
    return ["download", "test-file", "--dir", str(ws / "w")]


# ------------------------------------------------------------------------------------------ demo
def demo_port_out_of_range(ws, _):
    return ["demo", "--port", "99999", "--workdir", str(ws / "out")]


def demo_workdir_is_a_file(ws, _):
    return ["demo", "--workdir", _clip(ws), "--device", "cpu"]


CASES = [
    Case("live-output-is-input-respelled", live_output_is_input_respelled, 1, "would replace the input"),
    Case("live-max-latency-inf", live_max_latency_inf, 2, "'inf' is not a number of seconds"),
    Case("live-second-run-refused", live_second_run_refused, 1, "being written by keep live (pid 1)"),
    Case("live-output-symlink-loop", live_output_symlink_loop, 1, "points back to itself"),
    Case("live-disk-full", live_disk_full, 1, "the disk is full"),
    Case("degrade-output-is-the-gt", degrade_output_is_the_gt, 2, "would replace the input"),
    Case("degrade-output-inside-the-gt", degrade_output_inside_the_gt, 2, "lies inside the input"),
    Case("degrade-users-folder-in-the-way", degrade_users_folder_in_the_way, 2, "was not made by keep degrade",
         _holiday_kept),
    Case("degrade-second-run-refused", degrade_second_run_refused, 2, "being written by keep degrade (pid 1)"),
    Case("prepare-output-inside-the-input", prepare_output_inside_the_input, 2, "lies inside the input"),
    Case("prepare-vfhq-output-is-the-input", prepare_vfhq_output_is_the_input, 2, "lies inside the input"),
    Case("prepare-vfhq-output-inside-the-frames", prepare_vfhq_output_inside_the_frames, 2,
         "lies inside the input"),
    Case("prepare-video-without-a-face", prepare_video_without_a_face, 1, "no face found in any of its 6 frames",
         _no_training_clip),
    Case("download-failure-leaves-no-folder", download_failure_leaves_no_folder, 1, "could not download",
         _no_new_folder),
    Case("download-dir-is-a-file", download_dir_is_a_file, 1, "c.mp4 is a file"),
    Case("KEEP_WEIGHTS_DIR-is-a-file", weights_dir_variable_is_a_file, 1, "c.mp4 is a file"),
    Case("download-second-run-refused", download_second_run_refused, 1, "being written by keep download (pid 1)"),
    Case("demo-port-out-of-range", demo_port_out_of_range, 2, "99999 is out of range"),
    Case("demo-workdir-is-a-file", demo_workdir_is_a_file, 2, "cannot make a working folder"),
]


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return random_tiny_checkpoint(tmp_path_factory.mktemp("w") / "tiny.pth", SIZE)


def _snapshot(folder: Path):
    return {p.relative_to(folder): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_fails_clearly_and_leaves_the_inputs(case, tmp_path, weights, monkeypatch, capsys, one_thread):
    ws = tmp_path
    os.symlink(weights, ws / "tiny.pth")
    rng = np.random.default_rng(0)
    noise = [rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8) for _ in range(6)]
    (ws / "inputs" / "d").mkdir(parents=True)
    write_sample_clip(noise, ws / "inputs" / "d" / "c.mp4", tone_hz=None)
    write_frames(np.stack(noise[:3]), ws / "inputs" / "gt" / "clip_a")
    before = _snapshot(ws / "inputs")
    argv = case.setup(ws, monkeypatch)
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as exit_:
        code = exit_.code
    err = capsys.readouterr().err
    assert code == case.code, err
    assert case.message in err and "Traceback" not in err, err
    assert _snapshot(ws / "inputs") == before
    if case.check is not None:
        case.check(ws)


def test_live_says_how_many_frames_it_re_timed(tmp_path):
    """Frames whose time is not after the previous one's are moved 1/90000 s later; the summary says so."""
    from fractions import Fraction

    from keep.live.stream_io import LiveSink
    sink = LiveSink(str(tmp_path / "x.ts"), SIZE, SIZE, Fraction(25))
    frame = np.zeros((SIZE, SIZE, 3), np.uint8)
    for t in (0.0, 0.04, 0.04, 0.02, 0.08):
        sink.write(frame, t)
    sink.close()
    assert sink.retimed == 2
