"""Frames held by a run, bounded in bytes (keep/restore/frame_spill.py, ``--frame-memory``): beyond the
budget a frame's pixels live in an unlinked temporary file mapped back, and the output is unchanged."""
from fractions import Fraction

import numpy as np
import pytest

from keep.cli import main
from keep.io.source import Frame
from keep.restore.frame_spill import FrameSpill, frame_bytes

from test_restore import decode, wild_clip  # noqa: F401  (fixture)
from tiny_models import random_tiny_checkpoint


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    # seeded random init, not fill.py's weights: those amplify one-ulp differences of memory alignment
    # into visible ones, so two identical runs already differ
    return random_tiny_checkpoint(tmp_path_factory.mktemp("weights") / "tiny.pth", 128)


def _frame(index, deep=False):
    rng = np.random.default_rng(index)
    image = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    return Frame(index, image, index, Fraction(1, 20),
                 rng.integers(0, 65536, (30, 40, 3), dtype=np.uint16) if deep else None)


@pytest.mark.parametrize("deep", [False, True])
def test_frames_beyond_the_budget_are_mapped_from_unlinked_files(tmp_path, deep):
    frames = [_frame(i, deep) for i in range(5)]
    originals = [(f.image.copy(), None if f.deep is None else f.deep.copy()) for f in frames]
    size = frame_bytes(frames[0])
    spill = FrameSpill(budget=2 * size, folder=tmp_path / "out")
    held = list(spill.admit_all(frames))
    assert [isinstance(f.image, np.memmap) for f in held] == [False, False, True, True, True]
    assert spill.in_memory == 2 * size and spill.spilled_frames == 3 and spill.spilled_bytes == 3 * size
    for frame, (image, deep_pixels) in zip(held, originals):
        assert np.array_equal(frame.image, image)
        if deep:
            assert isinstance(frame.deep, np.memmap) == isinstance(frame.image, np.memmap)
            assert np.array_equal(frame.deep, deep_pixels)
    assert list((tmp_path / "out").iterdir()) == []          # unlinked at once: nothing to clean up
    held[2].image[0, 0] = 7                                  # copy-on-write: writable, the file untouched
    spill.release(held[0])                                   # written: its memory is free again
    assert spill.in_memory == size
    assert not isinstance(spill.admit(_frame(5, deep)).image, np.memmap)
    spill.release(held[3])                                   # a spilled frame frees no counted memory
    assert spill.in_memory == 2 * size and spill.peak_in_memory == 2 * size
    assert "3 frames" in spill.describe() and "--frame-memory" in spill.describe()


def test_a_full_disk_names_the_folder_and_the_option(tmp_path, monkeypatch):
    from keep.restore import frame_spill
    from keep.restore.preflight import describe_os_error

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(frame_spill.tempfile, "mkstemp", full)
    spill = FrameSpill(budget=1, folder=tmp_path)
    spill.admit(_frame(0))
    with pytest.raises(OSError) as caught:
        spill.admit(_frame(1))
    assert describe_os_error(caught.value) == (
        f"cannot read or write {tmp_path}: No space left on device (frames beyond --frame-memory 0.00 GiB wait "
        f"in temporary files there; free some space or raise --frame-memory)")


def test_default_budget_is_a_quarter_of_what_is_free_shared_by_a_nodes_processes(monkeypatch):
    from keep.restore import batching
    from keep.restore.frame_spill import GIB, default_budget
    monkeypatch.setattr(batching, "available_memory", lambda device: 8 * GIB)
    assert default_budget({}) == 2 * GIB
    assert default_budget({"LOCAL_WORLD_SIZE": "4"}) == GIB // 2
    monkeypatch.setattr(batching, "available_memory", lambda device: 64 * GIB)
    assert default_budget({}) == 4 * GIB                       # capped
    monkeypatch.setattr(batching, "available_memory", lambda device: None)
    assert default_budget({}) == 4 * GIB                       # unknown (not Linux): the cap


def test_first_frame_is_held_in_memory_even_over_the_budget(tmp_path):
    spill = FrameSpill(budget=1, folder=tmp_path)
    assert not isinstance(spill.admit(_frame(0)).image, np.memmap)
    assert isinstance(spill.admit(_frame(1)).image, np.memmap)


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("path", ["opencv", "device"])
def test_restore_with_spilled_frames_writes_the_same_frames(tmp_path, weights, wild_clip, capsys,  # noqa: F811
                                                            monkeypatch, path):
    """The frames handed to the encoder (--save-frames) are the same bytes, on the CPU path and on the
    GPU path (on CPU tensors, with its stage threads: frames admitted by the decoding thread, released
    by the encoding one). The MP4s are compared by frame count only: x264 here does not encode the
    same frames to the same bytes run to run (docs/restore.md)."""
    if path == "device":
        monkeypatch.setenv("KEEP_DEVICE_PATH", "force")
    common = [str(wild_clip), "--weights", str(weights), "--detector", "dlib", "--window", "3",
              "--no-progress", "--device", "cpu", "--save-frames"]
    assert main(["restore", *common, "-o", str(tmp_path / "memory")]) == 0
    assert "held in temporary files" not in capsys.readouterr().out
    # 0.0005 GiB (524 kB) holds one 388x512 frame (596 kB): every later frame spills while one is held
    assert main(["restore", *common, "-o", str(tmp_path / "spilled"), "--frame-memory", "0.0005"]) == 0
    assert "frames (0.00 GiB) held in temporary files" in capsys.readouterr().out
    in_memory = sorted((tmp_path / "memory" / "wild" / "final_frames").glob("*.png"))
    spilled = sorted((tmp_path / "spilled" / "wild" / "final_frames").glob("*.png"))
    assert len(spilled) == len(in_memory) == 6
    assert all(a.read_bytes() == b.read_bytes() for a, b in zip(in_memory, spilled))
    assert len(decode(tmp_path / "spilled" / "wild.mp4")[1]) == 6
    assert not [p for p in (tmp_path / "spilled").rglob("*") if "keep-frame" in p.name]   # nothing left
