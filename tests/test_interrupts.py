"""`keep restore` stopped part-way: SIGTERM / Ctrl-C, `kill -9`, a failing writer, an impossible `-o`.

Whatever stops a run, no input is modified, no partial or half-finished output remains, and the user
reads one line saying what happened. Signals are sent to a real child process, never on a timer: the
child's network is slowed (a fixed sleep per window) and the test waits, with a deadline, until the
child's progress bar shows frames written and its hidden ``.partial`` files exist, so the signal
always lands mid-run. Everything here uses a random tiny network at 64 px on procedural frames in
``--aligned`` mode (no face detector, no shared material).
"""
import errno
import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import av
import numpy as np
import pytest

from keep.cli import main
from keep.io import writer as writer_module
from keep.io.samples import write_sample_clip
from keep.restore import pipeline, preflight
from tiny_models import random_tiny_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]
SIZE = 64          # network input = frame size (aligned mode): the smallest keep-tiny runs at
FRAMES = 40
WINDOW = 2         # 20 network calls per run
DELAY_S = 0.4      # per network call in the child: >= 7 s of run left after the first frames are out
READY_FRAMES = 2   # frames the child's progress bar must show before it is signalled
DEADLINE_S = 120   # for the child to get ready (its start imports torch; the machine may be busy)

# The child: `keep restore` with every network call slowed by a fixed sleep (a slow GPU, in effect).
SLOW_CHILD = """
import os, sys, time
from keep.restore.batching import BatchRestorer
delay = float(os.environ["KEEP_TEST_WINDOW_DELAY"])
inner = BatchRestorer.restore_many
def restore_many(self, windows):
    time.sleep(delay)
    return inner(self, windows)
BatchRestorer.restore_many = restore_many
from keep.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    return random_tiny_checkpoint(tmp_path_factory.mktemp("weights") / "keep_tiny_64.pth", SIZE)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """40 frames of 64x64 noise at 20 fps with a sound track (the compare video copies it too)."""
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8) for _ in range(FRAMES)]
    return write_sample_clip(frames, tmp_path_factory.mktemp("inputs") / "clip.mp4")


def digest(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def restore_argv(clip, out, weights, *extra):
    return ["restore", str(clip), "-o", str(out), "--weights", str(weights), "--aligned", "--device", "cpu",
            "--window", str(WINDOW), *extra]


def partials(folder):
    return sorted(p.name for p in Path(folder).glob(".*partial*"))


def frame_count(path):
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


class SlowChild:
    """`keep restore` in a child process with a slowed network; stderr collected by a thread."""

    def __init__(self, argv):
        env = dict(os.environ, PYTHONPATH=str(ROOT), KEEP_TEST_WINDOW_DELAY=str(DELAY_S))
        self.process = subprocess.Popen([sys.executable, "-c", SLOW_CHILD, *argv], stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, env=env)
        self._stderr = bytearray()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        while True:
            chunk = os.read(self.process.stderr.fileno(), 65536)
            if not chunk:
                return
            self._stderr.extend(chunk)

    @property
    def stderr(self) -> str:
        return bytes(self._stderr).decode(errors="replace")

    def frames_written(self) -> int:
        """The highest count the progress bar has shown (tqdm: ``n/total``)."""
        counts = [int(n) for n in re.findall(rf"\b(\d+)/{FRAMES}\b", self.stderr)]
        return max(counts, default=0)

    def wait_until_running(self, out: Path, expected_partials):
        """Poll (deadline, no fixed sleep) until frames are written and the partial files exist."""
        deadline = time.monotonic() + DEADLINE_S
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"the child ended early:\n{self.stderr[-3000:]}"
            if self.frames_written() >= READY_FRAMES and set(expected_partials) <= set(partials(out)):
                return
            time.sleep(0.05)
        self.process.kill()
        pytest.fail(f"the child was not writing after {DEADLINE_S} s:\n{self.stderr[-3000:]}")

    def finish(self, timeout=60):
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            pytest.fail(f"the child did not end {timeout} s after the signal:\n{self.stderr[-3000:]}")
        self._reader.join(10)
        return self.process.returncode


# ---------------------------------------------------------------- SIGTERM / Ctrl-C
@pytest.mark.timeout(240)
@pytest.mark.parametrize("signum,code,name,overlap,fresh_output", [
    (signal.SIGTERM, 143, "SIGTERM", True, True),
    (signal.SIGINT, 130, "Ctrl-C", False, False),
], ids=["SIGTERM-overlap-new-folder", "Ctrl-C-no-overlap-existing-folder"])
def test_a_signal_mid_run_ends_cleanly(tmp_path, tiny_weights, clip, signum, code, name, overlap, fresh_output):
    out = tmp_path / "out"
    user_files = {}
    if not fresh_output:   # a folder the user already has: only this run's files may go
        out.mkdir()
        (out / "notes.txt").write_text("mine")
        shutil.copy(clip, out / "earlier_result.mp4")
        user_files = {p.name: digest(p) for p in out.iterdir()}
    before = digest(clip)
    extra = ["--compare", "--save-faces"] + ([] if overlap else ["--no-overlap"])
    child = SlowChild(restore_argv(clip, out, tiny_weights, *extra))
    child.wait_until_running(out, [".clip.partial.mp4", ".clip_compare.partial.mp4"])
    assert (out / ".clip.tmp" / "restored_faces").is_dir()   # --save-faces has written some PNGs (staged)
    child.process.send_signal(signum)
    assert child.finish() == code, child.stderr[-3000:]
    stderr = child.stderr
    assert "Traceback" not in stderr, stderr[-3000:]
    # one line says what happened (the rest of stderr is the progress bar, redrawn with \r)
    messages = [line for line in re.split(r"[\r\n]", stderr) if line.startswith("keep restore")]
    assert messages == [f"keep restore: stopped by {name}: the unfinished output was removed"], stderr[-3000:]
    assert child.frames_written() < FRAMES                   # it was stopped, it did not finish
    assert digest(clip) == before
    if fresh_output:
        assert not out.exists()                              # the folder this run made is gone again
    else:
        assert {p.name: digest(p) for p in out.iterdir()} == user_files   # no partial, no clip/ folder


# ---------------------------------------------------------------- kill -9, then the next run
@pytest.mark.timeout(240)
def test_partial_files_of_a_killed_run_are_removed_by_the_next_run_of_that_output(tmp_path, tiny_weights, clip,
                                                                                   capsys):
    out = tmp_path / "out"
    child = SlowChild(restore_argv(clip, out, tiny_weights, "--compare"))
    child.wait_until_running(out, [".clip.partial.mp4", ".clip_compare.partial.mp4"])
    child.process.send_signal(signal.SIGKILL)               # no handler runs: the partial files stay
    assert child.finish() == -signal.SIGKILL
    assert partials(out) == [".clip.partial.mp4", ".clip_compare.partial.mp4"]
    # files that look alike but are not this run's temporaries: never touched
    lookalikes = {"clip.partial.mp4": b"user", ".clip.partial.mov": b"user", ".other.partial.mp4": b"other run",
                  ".clip.partial.mp4.keep": b"user"}
    for file, data in lookalikes.items():
        (out / file).write_bytes(data)
    # the next run of the same output, without --compare: its compare temporary is stale too
    assert main(restore_argv(clip, out, tiny_weights, "--no-progress")) == 0
    err = capsys.readouterr().err
    assert err.count(": a partial file left by an interrupted run") == 2, err
    assert frame_count(out / "clip.mp4") == FRAMES
    assert sorted(p.name for p in out.iterdir()) == sorted(["clip.mp4", *lookalikes])
    assert all((out / file).read_bytes() == data for file, data in lookalikes.items())


def test_links_at_the_temporary_names_are_removed_not_written_through(tmp_path, tiny_weights, clip, capsys):
    """A symlink or a hard link where the writer's temporary goes: opening it for writing would replace
    the user's file it leads to."""
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    precious = {name: elsewhere / name for name in ("symlinked.mp4", "hardlinked.mp4")}
    for file in precious.values():
        shutil.copy(clip, file)
    before = {name: digest(file) for name, file in precious.items()}
    (out / ".clip_compare.partial.mp4").symlink_to(precious["symlinked.mp4"])
    os.link(precious["hardlinked.mp4"], out / ".clip.partial.mp4")
    assert main(restore_argv(clip, out, tiny_weights, "--compare", "--no-progress")) == 0
    capsys.readouterr()
    assert {name: digest(file) for name, file in precious.items()} == before
    for video in ("clip.mp4", "clip_compare.mp4"):
        assert not (out / video).is_symlink() and frame_count(out / video) == FRAMES
    assert partials(out) == []


# ---------------------------------------------------------------- a writer fails part-way
def _disk_full(path):
    """The OSError PyAV raises when the disk is full (errno 28, the container's file name)."""
    return av.error.OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


class FailingContainer:
    """A PyAV output container whose trailer cannot be written (the disk fills as it closes)."""

    def __init__(self, inner):
        self._inner, self._failed = inner, False

    def close(self):
        if not self._failed:
            self._failed = True
            raise _disk_full(self._inner.name)
        return self._inner.close()

    def __getattr__(self, name):
        return getattr(self._inner, name)


@pytest.mark.parametrize("where", ["mid-way", "at-close"])
def test_a_failing_compare_writer_leaves_no_output_and_one_line(tmp_path, tiny_weights, clip, capsys, monkeypatch,
                                                                where):
    out = tmp_path / "out"
    original_init = writer_module.VideoWriter.__init__
    written = []

    def init(self, path, *args, **kwargs):
        original_init(self, path, *args, **kwargs)
        if Path(path).name != "clip_compare.mp4":
            return
        if where == "at-close":
            self._container = FailingContainer(self._container)
            return
        inner_write = self.write

        def write(image, pts):   # x264 holds ~40 frames back, so a full disk shows at a frame's encode
            written.append(pts)
            if len(written) == FRAMES // 2:
                raise _disk_full(self.tmp)
            return inner_write(image, pts)
        self.write = write
    monkeypatch.setattr(writer_module.VideoWriter, "__init__", init)
    before = digest(clip)
    assert main(restore_argv(clip, out, tiny_weights, "--compare", "--save-faces", "--no-progress")) == 1
    err = capsys.readouterr().err
    assert not out.exists(), sorted(p.name for p in out.rglob("*"))   # no video, complete or partial, no PNGs
    assert digest(clip) == before
    # one line, naming the file the user asked for (not the hidden temporary PyAV was writing)
    assert err.splitlines() == [f"keep restore: error: cannot read or write {out / 'clip_compare.mp4'}: "
                                f"No space left on device"], err


def test_ctrl_c_while_the_model_loads_leaves_no_empty_folder(tmp_path, clip, tiny_weights, capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(pipeline.VideoRestorer, "__init__", interrupted)
    out = tmp_path / "new" / "out"
    # a file that exists: past the pre-flight check; no progress: only the one line is printed
    assert main(restore_argv(clip, out, tiny_weights, "--no-progress")) == 130
    assert capsys.readouterr().err.splitlines() == ["keep restore: stopped by Ctrl-C: the unfinished output was removed"]
    assert not (tmp_path / "new").exists()


# ---------------------------------------------------------------- an output folder that cannot be written
def _ro_tmpfs_available(probe: Path) -> bool:
    if shutil.which("unshare") is None:
        return False
    probe.mkdir()
    result = subprocess.run(["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o ro none '{probe}' && "
                             f"! touch '{probe}/x' 2>/dev/null"], capture_output=True)
    return result.returncode == 0


@pytest.mark.timeout(120)
def test_a_read_only_output_folder_is_refused_before_the_work(tmp_path, clip):
    """A genuinely read-only file system (tests run as root, so chmod would not stop a write): a
    read-only tmpfs mounted in a user + mount namespace (`unshare -rm`, no privileges needed)."""
    folder = tmp_path / "ro"
    if not _ro_tmpfs_available(folder):
        pytest.skip("unprivileged user + mount namespaces (unshare -rm) are not available here; "
                    "test_an_unwritable_output_folder_is_refused_before_the_model_loads covers the probe")
    before = digest(clip)
    # --weights names a file that does not exist: the -o check must come first
    results = {}
    for target in (folder, folder / "sub"):
        command = " ".join([f"mount -t tmpfs -o ro none '{folder}' &&", f"'{sys.executable}' -m keep.cli",
                            *[f"'{a}'" for a in restore_argv(clip, target, tmp_path / "missing.pth")]])
        results[target] = subprocess.run(["unshare", "-rm", "sh", "-c", command], capture_output=True, text=True,
                                         env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=100)
    for target, result in results.items():
        assert result.returncode == 1, result.stderr
        assert result.stderr.splitlines() == [f"keep restore: error: cannot write to the output folder {target} "
                                              f"(Read-only file system); choose another -o or fix its "
                                              f"permissions"], result.stderr
    assert digest(clip) == before


def test_an_unwritable_output_folder_is_refused_before_the_model_loads(tmp_path, clip, capsys, monkeypatch):
    """The writability probe made to fail as on a read-only file system (monkeypatched in-process,
    so it runs wherever namespaces are not available)."""
    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded before the output folder was checked")
    monkeypatch.setattr(preflight.tempfile, "mkstemp", read_only)
    monkeypatch.setattr(pipeline.VideoRestorer, "__init__", no_model)
    out = tmp_path / "made" / "by" / "the run"
    assert main(restore_argv(clip, out, tmp_path / "weights.pth")) == 1
    assert capsys.readouterr().err.splitlines() == [
        f"keep restore: error: cannot write to the output folder {out} (Read-only file system); choose another "
        f"-o or fix its permissions"]
    assert not (tmp_path / "made").exists()     # the folders the probe needed are removed again
