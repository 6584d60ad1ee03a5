"""Bad-input table for `keep restore`: one parametrised test; each case is argv + expected exit code +
a fragment of the message; every case must write nothing and leave the inputs byte for byte unchanged.
Add a case by appending a row to CASES. Placeholders: {clip} a small video, {dir} its folder,
{out} a fresh output folder, {txt} a text file, {broken} garbage named .mp4, {missing} no such path,
{frames} a frame folder among the inputs, {loop} a symlink to itself, {fifo} a named pipe,
{bomb} / {liar} / {empty} / {html} checkpoints that are hostile (tests/hostile_files.py) or no checkpoint."""
import hashlib
import os

import numpy as np
import pytest

from hostile_files import inflating_checkpoint, lying_sizes_checkpoint
from keep.cli import main
from keep.io.images import write_image
from keep.io.samples import write_sample_clip

CASES = [
    # (id, argv after "restore", exit code, message fragment)
    ("missing-input", ["{missing}", "-o", "{out}"], 1, "does not exist"),
    ("text-file", ["{txt}", "-o", "{out}"], 1, "unsupported file type"),
    ("garbage-video", ["{broken}", "-o", "{out}"], 1, "broken.mp4"),
    ("output-is-input-with-overwrite", ["{clip}", "-o", "{dir}", "--overwrite"], 1, "would replace the input"),
    ("output-is-input-relative", ["{clip}", "-o", "{dir}/../inputs", "--overwrite"], 1, "would replace the input"),
    ("output-under-a-file", ["{clip}", "-o", "{clip}/sub"], 1, "is a file"),
    ("output-is-a-file", ["{clip}", "-o", "{txt}"], 1, "is a file, not a folder"),
    ("output-two-levels-under-a-file", ["{clip}", "-o", "{txt}/a/b"], 1, "notes.txt is a file"),
    ("output-name-too-long", ["{clip}", "-o", "{out}/" + "n" * 300], 1, "(File name too long)"),
    # root may write anywhere chmod forbids; the kernel's own file systems refuse even root
    ("output-in-proc", ["{clip}", "-o", "/proc/keep-restore-out"], 1, "cannot write to the output folder"),
    ("fps-divide-by-zero", ["{clip}", "-o", "{out}", "--fps", "1/0"], 2, "is not a frame rate"),
    ("fps-huge", ["{clip}", "-o", "{out}", "--fps", "1e12"], 2, "out of range"),
    ("fps-zero", ["{clip}", "-o", "{out}", "--fps", "0"], 2, "out of range"),
    ("fps-too-many-decimals", ["{clip}", "-o", "{out}", "--fps", "12.3456789123"], 2, "too many decimals"),
    ("crf-too-high", ["{clip}", "-o", "{out}", "--crf", "99"], 2, "between 0 and 51"),
    ("crf-negative", ["{clip}", "-o", "{out}", "--crf", "-1"], 2, "between 0 and 51"),
    ("window-zero", ["{clip}", "-o", "{out}", "--window", "0"], 2, "out of range"),
    ("sigma-negative", ["{clip}", "-o", "{out}", "--smooth-sigma", "-1"], 2, "out of range"),
    ("sigma-nan", ["{clip}", "-o", "{out}", "--smooth-sigma", "nan"], 2, "is not a number"),
    ("frame-memory-negative", ["{clip}", "-o", "{out}", "--frame-memory", "-1"], 2, "out of range"),
    ("frame-memory-inf", ["{clip}", "-o", "{out}", "--frame-memory", "inf"], 2, "is not a number of GiB"),
    ("bad-input-before-missing-weights", ["{broken}", "-o", "{out}", "--weights", "{missing}"], 1, "broken.mp4"),
    # keep/io/outputs.py: outputs never resolve to, lie inside or contain an input; a loop is one line
    ("output-symlink-loop", ["{clip}", "-o", "{loop}/results"], 1, "points back to itself"),
    ("output-inside-frame-folder", ["{frames}", "-o", "{frames}/results"], 1, "lies inside the input"),
    ("save-faces-into-frame-folder", ["{frames}", "-o", "{dir}", "--save-faces"], 1, "would replace the input"),
    ("input-is-a-fifo", ["{fifo}", "-o", "{out}"], 1, "is a named pipe (FIFO)"),
    # checkpoints refused before they are unpickled (keep/torch_file.py; memory: tests/test_torch_file.py)
    ("weights-inflating-zip", ["{clip}", "-o", "{out}", "--weights", "{bomb}"], 1, "is compressed (zip method 8)"),
    ("weights-sizes-beyond-file", ["{clip}", "-o", "{out}", "--weights", "{liar}"], 1, "add up to more than the file"),
    ("weights-empty-file", ["{clip}", "-o", "{out}", "--weights", "{empty}"], 1, "is empty (0 bytes)"),
    ("weights-html-page", ["{clip}", "-o", "{out}", "--weights", "{html}"], 1, "is an HTML page"),
]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    inputs = root / "inputs"
    inputs.mkdir()
    clip = write_sample_clip([np.full((32, 32, 3), 100, np.uint8)] * 2, inputs / "clip.mp4", tone_hz=None)
    (inputs / "notes.txt").write_text("not a video")
    (inputs / "broken.mp4").write_bytes(b"not a video at all" * 100)
    (inputs / "frames").mkdir()
    for i in range(2):
        write_image(inputs / "frames" / f"{i:08d}.png", np.full((32, 32, 3), 90, np.uint8))
    inflating_checkpoint(inputs / "bomb.pth", 8 << 20)
    lying_sizes_checkpoint(inputs / "liar.pth")
    (inputs / "empty.pth").write_bytes(b"")
    (inputs / "html.pth").write_text("<!DOCTYPE html><html><body>404: Not Found</body></html>")
    return root, inputs, clip


def _snapshot(folder):
    return {p.relative_to(folder): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("argv,code,fragment", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_fails_clearly_and_writes_nothing(workspace, tmp_path, capsys, argv, code, fragment):
    root, inputs, clip = workspace
    out = tmp_path / "out"
    loop, fifo = tmp_path / "loop", tmp_path / "pipe.mp4"
    os.symlink(loop, loop)
    os.mkfifo(fifo)
    values = {"clip": clip, "dir": inputs, "out": out, "txt": inputs / "notes.txt",
              "broken": inputs / "broken.mp4", "missing": root / "no_such_thing.mp4",
              "frames": inputs / "frames", "loop": loop, "fifo": fifo,
              **{name: inputs / f"{name}.pth" for name in ("bomb", "liar", "empty", "html")}}
    before = _snapshot(inputs)
    argv = [a.format(**values) for a in argv]
    try:
        result = main(["restore", *argv, "--no-progress"])
    except SystemExit as exit_:
        result = exit_.code
    err = capsys.readouterr().err
    assert result == code, err
    assert fragment in err and "Traceback" not in err
    assert not out.exists()
    assert _snapshot(inputs) == before
