"""`keep live`: causal landmark smoothing, the drop policy, and the command on a replayed file, a pipe, a
source that stops mid-way and Ctrl-C, with the tiny network on CPU."""
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from scipy.signal import lfilter

from keep.cli import main
from keep.face.align import FFHQ_TEMPLATE_512
from keep.face.causal_smoothing import LandmarkHold, OneEuroFilter
from keep.face.detect import Detection, FaceDetector
from keep.face.paste import FacePaster
from keep.io import open_source
from keep.io.samples import write_sample_clip
from keep.live.capture import Captured, FrameQueue
from keep.live.faces import CausalNetwork, LiveFaceRestorer, SmoothingOptions
from keep.live.session import LiveSettings, run_session
from keep.live.stream_io import LiveFrame, LiveInput

from shared_material import VIDEOS, require
from tiny_models import random_tiny_checkpoint

ROOT = Path(__file__).resolve().parents[1]
SIZE = 128   # the tiny configuration at 128 px (the synthetic clips are aligned 128x128 faces)


def decoded_frames(path_or_bytes):
    source = av.open(path_or_bytes if isinstance(path_or_bytes, str) else path_or_bytes, format=None)
    with source:
        frames = [f for f in source.decode(video=0)]
    return [f.to_ndarray(format="rgb24") for f in frames], [f.time for f in frames]


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    return random_tiny_checkpoint(tmp_path_factory.mktemp("weights") / "keep_tiny.pth", SIZE)


@pytest.fixture(scope="module")
def clip_ts(tmp_path_factory):
    """The first 24 frames of synthetic_1 (aligned 128x128 faces, 20 fps) as an MPEG-TS stream."""
    with open_source(require(VIDEOS / "synthetic_1.mp4")) as source:
        frames = [f.image for f in itertools.islice(source, 24)]
    return write_sample_clip(frames, tmp_path_factory.mktemp("clips") / "clip.ts", tone_hz=None)


def live_args(weights, *extra):
    return ["live", *extra, "--weights", str(weights), "--device", "cpu", "--threads", "1", "--no-progress"]


def subprocess_env():
    return dict(os.environ, PYTHONPATH=str(ROOT))


# ---------------------------------------------------------------- causal face tracking
def test_one_euro_without_speed_term_is_the_exponential_smoother_and_is_causal():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 5, 2)) * 3 + 100
    f = OneEuroFilter(min_cutoff=1.5, beta=0.0)
    out = np.stack([f(v, i / 20) for i, v in enumerate(x)])
    # independent reference: y_n = a x_n + (1 - a) y_{n-1}, y_0 = x_0, a = 1 / (1 + tau / dt)
    a = 1 / (1 + 1 / (2 * np.pi * 1.5) / 0.05)
    flat = x.reshape(40, -1)
    ref = lfilter([a], [1, -(1 - a)], flat[1:], axis=0, zi=((1 - a) * flat[0])[None])[0]
    np.testing.assert_allclose(out.reshape(40, -1)[1:], ref, rtol=1e-10)
    # later inputs never change earlier outputs
    g = OneEuroFilter(1.5, 0.05)
    first = [g(v, i / 20) for i, v in enumerate(x[:20])]
    h = OneEuroFilter(1.5, 0.05)
    again = [h(v, i / 20) for i, v in enumerate(np.concatenate([x[:20], x[20:] + 50]))][:20]
    assert all(np.array_equal(p, q) for p, q in zip(first, again))


def test_one_euro_is_steady_at_rest_and_follows_motion_with_beta():
    rng = np.random.default_rng(1)
    still = 200 + rng.normal(size=(100, 10))            # 1 px detector jitter
    f = OneEuroFilter(1.0, 0.02)
    out = np.stack([f(v, i / 20) for i, v in enumerate(still)])
    assert out[20:].std(0).mean() < 0.5 * still[20:].std(0).mean()
    ramp = np.arange(60)[:, None] * 10.0 + np.zeros((60, 10))   # 200 px/s
    lags = {}
    for beta in (0.0, 0.05):
        f = OneEuroFilter(1.0, beta)
        lags[beta] = abs(ramp[-1] - [f(v, i / 20) for i, v in enumerate(ramp)][-1]).mean()
    assert lags[0.05] < 0.3 * lags[0.0]
    with pytest.raises(ValueError, match="must increase"):
        f(ramp[0], 0.0)


def test_landmark_hold_keeps_the_last_landmarks_up_to_the_limit():
    hold = LandmarkHold(max_hold=2)
    a = np.ones((5, 2))
    assert np.array_equal(hold.push(a), a)
    assert np.array_equal(hold.push(None), a) and np.array_equal(hold.push(None), a)
    assert hold.push(None) is None and hold.lost
    assert hold.push(a) is None                          # a lost track stays lost (a new one starts)


class ScriptedDetector(FaceDetector):
    """One face at a fixed place, present on the frames listed."""
    name = "scripted"

    def __init__(self, present):
        self.present, self.calls = set(present), 0
        scale = 0.25   # the 512 template's face shrunk into a 256x256 frame, offset
        self.landmarks = FFHQ_TEMPLATE_512 * scale + 40

    def detect(self, image):
        frame, self.calls = self.calls, self.calls + 1
        if frame not in self.present:
            return []
        box = np.array([*self.landmarks.min(0) - 30, *self.landmarks.max(0) + 30])
        return [Detection(box, self.landmarks.copy(), 1.0)]


def test_live_faces_hold_then_end_the_track_and_paste_each_frame_at_once(tiny_weights):
    from keep.api import load_model
    torch.set_num_threads(1)
    net = CausalNetwork(load_model(str(tiny_weights)), torch.device("cpu"))
    restorer = LiveFaceRestorer(net, detector=ScriptedDetector({0, 1, 2, 6}), paster=FacePaster(1),
                                smoothing=SmoothingOptions(max_hold=2))
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (256, 256, 3), dtype=np.uint8) for _ in range(7)]
    reports, changed = [], []
    for i, image in enumerate(frames):
        out = restorer.process(image, i / 20)
        reports.append((restorer.last.faces, restorer.last.held))
        changed.append(not np.array_equal(out, image))
        assert out.shape == image.shape
        assert np.array_equal(out[-20:], image[-20:])   # far from the face: the input, bit for bit
    # frames 3, 4 held; frame 5 lost (unchanged); frame 6 a new track with a fresh state
    assert reports == [(1, 0), (1, 0), (1, 0), (1, 1), (1, 1), (0, 0), (1, 0)]
    assert changed == [True, True, True, True, True, False, True]
    assert restorer.tracks_started == 2 and restorer.frames_without_face == 1


# ---------------------------------------------------------------- drop policy
def test_drop_policy_skips_stale_frames_but_never_the_newest():
    q = FrameQueue("drop", max_latency=0.3, capacity=3)
    now = time.perf_counter()
    for i, age in enumerate([1.0, 0.5, 0.25, 0.05]):       # 4 into 3 places: the oldest overflows
        q.put(Captured(LiveFrame(i, None, i / 20), now - age))
    assert q.dropped.overflow == 1
    item = q.get(expected_restore_s=0.1)                    # 0.5 + 0.1, 0.25 + 0.1 > 0.3: both stale
    assert item.frame.index == 3 and q.dropped.stale == 2
    q.put(Captured(LiveFrame(4, None, 0.2), now - 10))
    assert q.get(expected_restore_s=5).frame.index == 4     # the newest is restored however late
    q.close()
    assert q.get() is None


def test_wait_policy_blocks_the_reader_and_drops_nothing():
    q = FrameQueue("wait", max_latency=0.01, capacity=1)
    q.put(Captured(LiveFrame(0, None, 0), 0.0))
    done = threading.Event()
    threading.Thread(target=lambda: (q.put(Captured(LiveFrame(1, None, 0), 0.0)), done.set()), daemon=True).start()
    assert not done.wait(0.3)                               # full: the reader waits
    assert q.get().frame.index == 0 and done.wait(2)
    assert q.get().frame.index == 1 and q.dropped.total == 0


@pytest.mark.parametrize("policy", ["drop", "wait"])
def test_latency_stays_bounded_when_the_restorer_is_slow(tmp_path, clip_ts, policy):
    """A restorer 2x slower than the source (0.1 s per frame at 20 fps): dropping keeps latency near
    --max-latency; waiting lets it grow with the stream (the contrast shows the bound is the policy's)."""
    slow = 0.1
    reads = []

    def restorer(image, t, read):
        reads.append(read)   # the frame's number among those read: a --shots cut list counts these
        time.sleep(slow)
        return image
    source = LiveInput(str(clip_ts))
    try:
        summary = run_session(source, str(tmp_path / "out.ts"), restorer, (source.width, source.height),
                              LiveSettings(realtime=True, when_behind=policy, max_latency=0.25, progress=False))
    finally:
        source.close()
    frames, _ = decoded_frames(str(tmp_path / "out.ts"))
    assert summary.frames_read == 24
    assert len(frames) == summary.frames_written == summary.frames_read - summary.frames_dropped
    assert len(reads) == len(frames) and reads == sorted(set(reads)) and reads[-1] < 24
    assert (reads[-1] >= len(reads)) == (summary.frames_dropped > 0)   # the dropped frames' numbers are skipped
    if policy == "drop":
        assert summary.frames_dropped >= 6
        assert max(summary.latencies) < 0.25 + slow + 0.25          # max-latency + one restore + slack
    else:
        assert summary.frames_dropped == 0 and max(summary.latencies) > 0.9   # 24 x 0.05 s behind


# ---------------------------------------------------------------- the command
def test_live_replayed_file_in_real_time(tmp_path, tiny_weights, capsys):
    src = require(VIDEOS / "synthetic_1.mp4")
    out, stats = tmp_path / "live.mp4", tmp_path / "stats.json"
    assert main(live_args(tiny_weights, str(src), "-o", str(out), "--aligned", "--realtime", "--max-frames", "30",
                          "--stats", str(stats))) == 0
    report = json.loads(stats.read_text())
    frames, times = decoded_frames(str(out))
    assert report["frames_read"] == 30
    assert len(frames) == report["frames_written"] == 30 - report["frames_dropped"]
    assert frames[0].shape == (SIZE, SIZE, 3)
    assert all(b > a for a, b in zip(times, times[1:]))               # the input's timeline, gaps where dropped
    assert times[-1] <= 29 / 20 + 1e-3
    assert "--max-frames 30 reached after 30 frames" in capsys.readouterr().out
    assert main(live_args(tiny_weights, str(src), "-o", str(out), "--aligned")) == 1   # no silent overwrite
    assert "already exists" in capsys.readouterr().err


def test_live_pipe_in_and_out(clip_ts, tiny_weights):
    """MPEG-TS on stdin -> MPEG-TS on stdout, every frame restored (--when-behind wait)."""
    result = subprocess.run([sys.executable, "-m", "keep.cli", *live_args(tiny_weights, "-", "-o", "-", "--aligned",
                                                                          "--when-behind", "wait")],
                            stdin=open(clip_ts, "rb"), capture_output=True, env=subprocess_env(), timeout=120)
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    import io
    frames, _ = decoded_frames(io.BytesIO(result.stdout))
    assert len(frames) == 24
    assert "24 frames read, 0 dropped" in result.stderr.decode()


def test_source_that_stops_mid_way_gives_a_valid_file_and_says_so(tmp_path, clip_ts, tiny_weights):
    data = clip_ts.read_bytes()
    cut = tmp_path / "cut.ts"
    cut.write_bytes(data[:len(data) // 2 // 188 * 188 + 100])     # the stream breaks inside a packet
    out = tmp_path / "out.mp4"
    result = subprocess.run([sys.executable, "-m", "keep.cli", *live_args(tiny_weights, "-", "-o", str(out),
                                                                          "--aligned", "--stats",
                                                                          str(tmp_path / "s.json"))],
                            stdin=open(cut, "rb"), capture_output=True, env=subprocess_env(), timeout=120)
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    report = json.loads((tmp_path / "s.json").read_text())
    assert 0 < report["frames_read"] < 24
    assert "end of stream after" in result.stdout.decode()
    frames, _ = decoded_frames(str(out))
    assert len(frames) == report["frames_read"] - report["frames_dropped"] > 0


def test_ctrl_c_ends_with_a_finished_file(tmp_path, tiny_weights):
    src = require(VIDEOS / "synthetic_1.mp4")
    out, stats = tmp_path / "live.mp4", tmp_path / "s.json"
    proc = subprocess.Popen([sys.executable, "-m", "keep.cli", *live_args(tiny_weights, str(src), "-o", str(out),
                                                                          "--aligned", "--realtime",
                                                                          "--stats", str(stats))],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=subprocess_env())
    deadline = time.time() + 60
    while time.time() < deadline and (not out.exists() or out.stat().st_size < 20000):
        time.sleep(0.2)            # until a few fragments are out
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr.decode()[-2000:]
    assert "stopped by Ctrl-C" in stdout.decode()
    report = json.loads(stats.read_text())
    frames, _ = decoded_frames(str(out))
    assert 0 < len(frames) == report["frames_written"] < 265


def test_bad_live_arguments_are_one_line_errors(tmp_path, tiny_weights, capsys):
    assert main(live_args(tiny_weights, str(tmp_path / "missing.mp4"), "-o", str(tmp_path / "o.mp4"))) == 1
    assert "does not exist" in capsys.readouterr().err
    src = str(require(VIDEOS / "synthetic_1.mp4"))
    assert main(live_args(tiny_weights, src, "-o", str(tmp_path / "o.avi"))) == 1
    assert ".mp4 (fragmented) or .ts" in capsys.readouterr().err
    assert main(live_args(tiny_weights, "-", "-o", str(tmp_path / "o.mp4"), "--realtime")) == 1
    assert "--realtime replays a file" in capsys.readouterr().err
