"""Bad or unusual input to ``keep eval``: one parametrised table, built to grow.

Each case builds its argv from a small workspace (GT and prediction clips of 4 frames, 32x32) and
states the exit code and a fragment of the one-line message it must print. For every case: no
traceback, and nothing written (the output folder is absent afterwards, or unchanged if it existed).

To add a case: append a ``Case`` to ``CASES`` (``setup`` may change the workspace first).
"""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional

import numpy as np
import pytest

from keep.cli import main as keep_main
from keep.evaluation.clips import write_frames


@dataclass
class Case:
    id: str
    argv: Callable[[Path], List[str]]      # workspace -> arguments after "eval"
    code: int
    message: str                           # fragment of stderr (case-sensitive)
    setup: Optional[Callable[[Path], None]] = None


def _base(ws: Path, *extra: str, pred: str = "pred", gt: str = "gt", out: str = "out") -> List[str]:
    return ["--pred", str(ws / pred), "--gt", str(ws / gt), "-o", str(ws / out), "--metrics", "psnr", *extra]


def _frames(seed: int, t: int = 4) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (t, 32, 32, 3), dtype=np.uint8)


def _previous_run(ws: Path) -> None:
    (ws / "out").mkdir()
    (ws / "out" / "summary.md").write_text("an earlier table\n")


def _lone_clips(ws: Path) -> None:
    write_frames(_frames(0), ws / "lone_gt" / "clip_x")
    write_frames(_frames(0), ws / "lone_pred" / "clip_y")


def _short_prediction(ws: Path) -> None:
    write_frames(_frames(1, t=3), ws / "pred" / "clip_a")


def _broken_video(ws: Path) -> None:
    (ws / "broken").mkdir()
    (ws / "broken" / "clip_a.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(200))
    write_frames(_frames(1), ws / "broken" / "clip_b")


def _file_at(name: str):
    def make(ws: Path) -> None:
        (ws / name).write_text("not a folder\n")
    return make


def _empty_gt(ws: Path) -> None:
    (ws / "empty").mkdir()


def _running_eval(ws: Path) -> None:
    """Another keep eval writes ws/out now (pid 1 always runs): keep/io/outputs.py's lock."""
    (ws / "out").mkdir()
    (ws / "out" / ".keep-lock").write_text(f"1 {socket.gethostname()} keep eval\n")


def _symlink_loop(ws: Path) -> None:
    os.symlink(ws / "loop", ws / "loop")


CASES = [
    Case("unknown metric", lambda ws: _base(ws)[:-1] + ["psnr,sharpness"], 2, "unknown metric"),
    Case("empty metric list", lambda ws: _base(ws)[:-1] + [","], 2, "unknown metric"),
    Case("--names count", lambda ws: _base(ws, "--names", "a", "b"), 2, "--names has 2 entries for 1"),
    Case("missing GT folder", lambda ws: _base(ws, gt="nowhere"), 2, "does not exist"),
    Case("missing prediction folder", lambda ws: _base(ws, pred="nowhere"), 2, "does not exist"),
    Case("GT is a text file", lambda ws: _base(ws, gt="notes.txt"), 2, "neither a folder nor a video",
         _file_at("notes.txt")),
    Case("empty GT folder", lambda ws: _base(ws, gt="empty"), 2, "no clips found", _empty_gt),
    Case("GT clip without prediction", lambda ws: _base(ws, pred="pred_partial"), 2, "no prediction for GT clip(s) clip_b"),
    Case("frame counts differ", lambda ws: _base(ws), 2, "3 restored frames but 4 GT frames", _short_prediction),
    Case("broken prediction video", lambda ws: _base(ws, pred="broken"), 2, "cannot open video", _broken_video),
    Case("lone clips with other names", lambda ws: _base(ws, pred="lone_pred", gt="lone_gt"), 2,
         "pass --allow-name-mismatch", _lone_clips),
    Case("output holds a previous run", lambda ws: _base(ws), 2, "pass --overwrite", _previous_run),
    Case("output is a file", lambda ws: _base(ws, out="out.txt"), 2, "is not a folder", _file_at("out.txt")),
    Case("output below a file", lambda ws: _base(ws, out="out.txt/eval"), 2, "is a file, not a folder",
         _file_at("out.txt")),
    Case("output not writable", lambda ws: _base(ws, out="/proc/keep-eval-test/out"), 2,   # absolute: ws / out = out
         "cannot write to /proc"),
    Case("output inside the GT", lambda ws: _base(ws, out="gt/eval"), 2, "inside the input"),
    # keep/io/outputs.py (issue 20): --overwrite replaces only keep eval's own files; one run per folder
    Case("--overwrite over files keep eval did not write", lambda ws: _base(ws, "--overwrite"), 2,
         "not the .keep-output marker", _previous_run),
    Case("output being written by another run", lambda ws: _base(ws), 2, "being written by keep eval (pid 1)",
         _running_eval),
    Case("output through a symlink loop", lambda ws: _base(ws, out="loop/eval"), 2, "points back to itself",
         _symlink_loop),
    Case("window 0", lambda ws: _base(ws, "--window", "0"), 2, "--window must be at least 1"),
    Case("max-frames 0", lambda ws: _base(ws, "--max-frames", "0"), 2, "--max-frames must be at least 1"),
    Case("negative crop border", lambda ws: _base(ws, "--crop-border", "-2"), 2, "--crop-border must be >= 0"),
    Case("unknown LPIPS backbone", lambda ws: _base(ws, "--lpips-net", "squeeze"), 2, "invalid choice"),
    Case("substitute with --require-backends",
         lambda ws: _base(ws)[:-1] + ["psnr,ids", "--require-backends"], 2,
         "ids_dlib is an offline substitute"),
    Case("unavailable with --require-backends",
         lambda ws: _base(ws)[:-1] + ["psnr,fvd", "--require-backends"], 2, "fvd: FVD (I3D)"),
]


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    monkeypatch.setenv("KEEP_WEIGHTS_DIR", str(tmp_path / "no_weights"))   # ArcFace, GMFlow, I3D absent
    for name, seed in (("clip_a", 0), ("clip_b", 1)):
        write_frames(_frames(seed), tmp_path / "gt" / name)
        write_frames(_frames(seed + 10), tmp_path / "pred" / name)
    write_frames(_frames(10), tmp_path / "pred_partial" / "clip_a")
    return tmp_path


def _snapshot(folder: Path):
    if not folder.exists():
        return None
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None for p in sorted(folder.rglob("*"))}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, workspace: Path, capsys):
    if case.setup:
        case.setup(workspace)
    argv = case.argv(workspace)
    out = Path(argv[argv.index("-o") + 1])
    before = _snapshot(out)
    try:
        code = keep_main(["eval", *argv])
    except SystemExit as exit_:          # argparse's own errors
        code = exit_.code
    err = capsys.readouterr().err
    assert code == case.code, err
    assert case.message in err, err
    assert "Traceback" not in err
    assert _snapshot(out) == before      # nothing written, nothing removed
    if before is None:
        assert not out.exists()


def test_the_table_covers_every_refusal_path():
    """Guard against a shrinking table: the count is reported in the README."""
    assert len(CASES) >= 22 and len({c.id for c in CASES}) == len(CASES)
