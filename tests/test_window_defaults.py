"""One window rule (keep/restore/progress.py: 4 on the CPU, the release's 20 elsewhere) for every place
that shows or assumes `keep restore`'s window: the restore records the window it used in its video
(keep/restore/window_tag.py) and `keep eval` reports window boundaries at that window without --window.
(The demo's slider: tests/test_demo.py.)"""
from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from keep.cli import main
from keep.evaluation.clips import write_frames
from keep.io.samples import write_sample_clip
from keep.io.writer import VideoWriter
from keep.restore.window_tag import recorded_window, window_tags

from tiny_models import random_tiny_checkpoint

SIZE = 64


def _noise(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8) for _ in range(n)]


def _video(path: Path, frames, tags=None) -> Path:
    writer = VideoWriter(path, SIZE, SIZE, Fraction(20), Fraction(1, 20), tags=tags)
    for i, frame in enumerate(frames):
        writer.write(frame, i)
    return writer.close()


def _eval(tmp_path: Path, *preds: Path, extra=()) -> int:
    return main(["eval", "--pred", *map(str, preds), "--gt", str(tmp_path / "gt"), "-o", str(tmp_path / "eval"),
                 "--metrics", "psnr", *extra])


def test_a_cpu_restore_records_window_4_and_eval_reports_boundaries_there(tmp_path, capsys, one_thread):
    frames = _noise(6)
    (tmp_path / "in").mkdir()
    clip = write_sample_clip(frames, tmp_path / "in" / "c.mp4", tone_hz=None)
    weights = random_tiny_checkpoint(tmp_path / "tiny.pth", SIZE)
    assert main(["restore", str(clip), "-o", str(tmp_path / "pred"), "--weights", str(weights), "--aligned",
                 "--device", "cpu", "--no-progress"]) == 0   # no --window: the CPU default
    assert recorded_window(tmp_path / "pred" / "c.mp4") == 4
    write_frames(np.stack(frames), tmp_path / "gt" / "c")
    capsys.readouterr()
    assert _eval(tmp_path, tmp_path / "pred") == 0
    info = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert info["window_boundaries"]["window"] == 4
    assert info["settings"]["window (boundary report)"] == "4 (recorded by keep restore in c.mp4)"
    assert "note:" not in capsys.readouterr().err


def test_eval_without_a_record_assumes_the_gpu_default_and_says_so(tmp_path, capsys):
    frames = _noise(4)
    _video(tmp_path / "pred" / "c.mp4", frames)          # another program's video: no record
    write_frames(np.stack(frames), tmp_path / "gt" / "c")
    capsys.readouterr()
    assert _eval(tmp_path, tmp_path / "pred") == 0
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["window_boundaries"]["window"] == 20
    err = capsys.readouterr().err
    assert "assumes 20" in err and "pass --window 4" in err, err


def test_eval_window_option_wins_and_different_records_are_refused(tmp_path, capsys):
    frames = _noise(4)
    _video(tmp_path / "cpu" / "c.mp4", frames, window_tags(4))
    _video(tmp_path / "gpu" / "c.mp4", frames, window_tags(20))
    write_frames(np.stack(frames), tmp_path / "gt" / "c")
    capsys.readouterr()
    assert _eval(tmp_path, tmp_path / "cpu", tmp_path / "gpu") == 2
    err = capsys.readouterr().err
    assert "different windows: 4 (c.mp4), 20 (c.mp4)" in err and "--window" in err and "Traceback" not in err
    assert not (tmp_path / "eval").exists()
    assert _eval(tmp_path, tmp_path / "cpu", tmp_path / "gpu", extra=["--window", "7"]) == 0
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["window_boundaries"]["window"] == 7


@pytest.mark.parametrize("text, window", [("keep restore window=12", 12), ("keep restore window=x", None),
                                          ("made by another tool", None)])
def test_only_keep_restores_record_is_read(tmp_path, text, window):
    path = _video(tmp_path / "v.mp4", _noise(2), {"comment": text})
    assert recorded_window(path) == window
    (tmp_path / "broken.mp4").write_bytes(b"not a video")
    assert recorded_window(tmp_path / "broken.mp4") is None
