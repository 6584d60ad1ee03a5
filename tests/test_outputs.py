"""The output-safety rule (keep/io/outputs.py): outputs never overlap inputs, only what a command made is
replaced (whole), one writer per output. Unit tests of the rule, then `keep restore` end to end with a
tiny random network (aligned 64 px frames, a few frames: seconds)."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from keep.cli import main
from keep.io import InputError, write_image
from keep.io.samples import write_sample_clip

from tiny_models import random_tiny_checkpoint

SIZE = 64


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


# ------------------------------------------------------------------------------------- the rule
def test_an_output_spelled_differently_is_still_the_input(tmp_path):
    from keep.io.outputs import refuse_overlap
    d = tmp_path / "d"
    d.mkdir()
    (d / "c.mp4").write_bytes(b"x")
    os.link(d / "c.mp4", tmp_path / "hard.mp4")
    os.symlink(d, tmp_path / "link")
    for spelling in (d / ".." / "d" / "c.mp4", tmp_path / "hard.mp4", tmp_path / "link" / "c.mp4"):
        with pytest.raises(InputError, match="would replace the input"):
            refuse_overlap([d / "c.mp4"], [spelling])
    with pytest.raises(InputError, match="lies inside the input"):
        refuse_overlap([d], [tmp_path / "link" / "x.png"])
    with pytest.raises(InputError, match="contains the input"):
        refuse_overlap([d / "c.mp4"], [tmp_path])
    with pytest.raises(InputError, match="lies inside the input"):
        refuse_overlap([d], [tmp_path / "elsewhere"], root=d / "sub")
    refuse_overlap([d / "c.mp4"], [d / "c_restored.mp4"], root=d)     # a sibling in the input's folder is fine


def test_a_lock_refuses_a_second_writer_and_a_dead_writers_lock_is_taken_over(tmp_path):
    from keep.io.outputs import OutputLock
    first = OutputLock.beside(tmp_path / "x.mp4", "keep live").acquire()
    with pytest.raises(InputError, match=rf"being written by keep live \(pid {os.getpid()}\)"):
        OutputLock.beside(tmp_path / "x.mp4", "keep live").acquire()
    first.release()
    assert not (tmp_path / ".x.mp4.keep-lock").exists()
    (tmp_path / ".x.mp4.keep-lock").write_text(f"{_dead_pid()} {socket.gethostname()} keep live\n")
    second = OutputLock.beside(tmp_path / "x.mp4", "keep live").acquire()
    assert "no longer runs" in second.note
    second.release()


def test_a_staged_folder_replaces_only_its_own_kind_and_whole(tmp_path):
    from keep.io.outputs import MARKER, StagedFolder, is_owned
    mine = StagedFolder(tmp_path / "clip", "keep degrade")
    (mine.path / "a.png").write_bytes(b"1")
    (mine.path / "b.png").write_bytes(b"2")
    mine.commit(replace=False)
    assert is_owned(tmp_path / "clip")
    again = StagedFolder(tmp_path / "clip", "keep degrade")
    (again.path / "a.png").write_bytes(b"3")
    with pytest.raises(InputError, match="already exists"):
        again.commit(replace=False)
    again.commit(replace=True)
    assert sorted(p.name for p in (tmp_path / "clip").iterdir()) == [MARKER, "a.png"]   # no stale b.png
    other = StagedFolder(tmp_path / "clip", "keep restore")      # another command's folder: not its own
    with pytest.raises(InputError, match="not made by keep restore"):
        other.commit(replace=True)
    other.abort()
    assert (tmp_path / "clip" / "a.png").read_bytes() == b"3"
    user = tmp_path / "user"
    user.mkdir()
    (user / "mine.txt").write_text("keep me")
    foreign = StagedFolder(user, "keep degrade")
    with pytest.raises(InputError, match="not made by keep degrade"):
        foreign.commit(replace=True)
    foreign.abort()
    assert (user / "mine.txt").read_text() == "keep me" and not foreign.path.exists()


# ---------------------------------------------------------------------------- keep restore, end to end
@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return random_tiny_checkpoint(tmp_path_factory.mktemp("w") / "tiny.pth", SIZE)


def _frames(folder: Path, count: int) -> Path:
    rng = np.random.default_rng(count)
    for i in range(count):
        write_image(folder / f"{i:08d}.png", rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8))
    return folder


def _restore(source, out, weights, *extra):
    return main(["restore", str(source), "-o", str(out), "--weights", str(weights), "--aligned", "--device", "cpu",
                 "--window", "2", "--no-progress", *extra])


def test_overwrite_with_save_faces_leaves_no_faces_of_the_previous_run(tmp_path, weights, one_thread):
    out = tmp_path / "out"
    assert _restore(_frames(tmp_path / "a" / "clip", 5), out, weights, "--save-faces") == 0
    assert len(list((out / "clip" / "restored_faces").glob("*.png"))) == 5
    assert _restore(_frames(tmp_path / "b" / "clip", 2), out, weights, "--save-faces", "--overwrite") == 0
    assert sorted(p.name for p in (out / "clip" / "restored_faces").iterdir()) == ["00000000.png", "00000001.png"]
    assert sorted(p.name for p in out.iterdir()) == ["clip", "clip.mp4"]     # no staging, no lock left
    # --overwrite without --save-faces: the result is the new run's alone, so the old faces go too
    assert _restore(tmp_path / "b" / "clip", out, weights, "--overwrite") == 0
    assert sorted(p.name for p in out.iterdir()) == ["clip.mp4"]


def test_a_folder_of_the_user_in_the_way_of_the_faces_is_never_replaced(tmp_path, weights, capsys):
    out = tmp_path / "out"
    (out / "clip").mkdir(parents=True)
    (out / "clip" / "holiday.jpg").write_bytes(b"mine")
    assert _restore(_frames(tmp_path / "clip", 2), out, weights, "--save-faces", "--overwrite") == 1
    assert "was not made by keep restore" in capsys.readouterr().err
    assert sorted(p.name for p in out.rglob("*")) == ["clip", "holiday.jpg"]


def test_a_second_restore_into_the_same_output_is_refused_and_its_temporary_kept(tmp_path, weights, capsys):
    out = tmp_path / "out"
    out.mkdir()
    # another restore of clip is running (pid 1 is always alive): its lock and its temporary
    (out / ".clip.mp4.keep-lock").write_text(f"1 {socket.gethostname()} keep restore\n")
    (out / ".clip.partial.mp4").write_bytes(b"being written")
    assert _restore(_frames(tmp_path / "clip", 2), out, weights) == 1
    err = capsys.readouterr().err
    assert "being written by keep restore (pid 1)" in err and "Traceback" not in err
    assert (out / ".clip.partial.mp4").read_bytes() == b"being written"
    assert not (out / "clip.mp4").exists()


def test_a_lock_left_by_a_killed_restore_is_taken_over(tmp_path, weights, capsys, one_thread):
    out = tmp_path / "out"
    out.mkdir()
    (out / ".clip.mp4.keep-lock").write_text(f"{_dead_pid()} {socket.gethostname()} keep restore\n")
    (out / ".clip.partial.mp4").write_bytes(b"left by kill -9")
    assert _restore(_frames(tmp_path / "clip", 2), out, weights) == 0
    err = capsys.readouterr().err
    assert "no longer runs" in err and "a partial file left by an interrupted run" in err
    assert sorted(p.name for p in out.iterdir()) == ["clip.mp4"]


def test_apple_double_files_are_not_frames(tmp_path, weights, one_thread):
    frames = _frames(tmp_path / "clip", 2)
    (frames / "._00000000.png").write_bytes(b"\x00\x05\x16\x07 macOS resource fork")
    out = tmp_path / "out"
    assert _restore(frames, out, weights, "--save-faces") == 0
    assert len(list((out / "clip" / "restored_faces").glob("*.png"))) == 2
    clips = tmp_path / "clips"
    clips.mkdir()
    write_sample_clip([np.zeros((SIZE, SIZE, 3), np.uint8)] * 2, clips / "a.mp4", tone_hz=None)
    (clips / "._a.mp4").write_bytes(b"\x00\x05\x16\x07")
    from keep.io import find_inputs
    assert find_inputs(clips) == [clips / "a.mp4"]


def test_frames_with_a_repeated_timestamp_are_re_timed_and_told(tmp_path):
    """An mkv whose 4th frame repeats the 3rd's time: placed on the frame grid, and the notes say so."""
    from fractions import Fraction

    import av

    from keep.io import open_source
    path = tmp_path / "repeated.mkv"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=10)
        stream.width = stream.height = 32
        stream.pix_fmt = "yuv420p"
        packets = []
        for i in range(6):
            frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), 30 * i, np.uint8), format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, 10)
            packets += stream.encode(frame)
        packets += stream.encode(None)
        for packet in packets:
            if packet.pts == 3:
                packet.pts = packet.dts = 2      # the muxer's clock: a repeated time
            out.mux(packet)
    with open_source(path) as source:
        ticks = [f.pts for f in source]
        notes = source.info.notes
    assert ticks == sorted(set(ticks)) and len(ticks) == 6
    assert any("1 frame(s) had no timestamp after the previous frame's" in n for n in notes), notes
