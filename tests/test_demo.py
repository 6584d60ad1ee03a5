"""`keep demo`: the app launched as a user launches it (``keep demo`` in a subprocess, on a free local
port, the tiny filled network of test_restore.py, the dlib detector), driven through Gradio's
Python client and through a real headless Chromium (Debian's ``chromium``, driven by Playwright);
plus the job's cancel, limits and zip handling in-process.

The demo must run the same VideoRestorer as ``keep restore``: its video is compared frame by frame
with the one ``keep restore`` writes for the same clip and options."""
import itertools
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("gradio", reason="gradio is not installed (the demo/test extra; needs Python >= 3.10)")
gradio_client = pytest.importorskip("gradio_client", reason="gradio_client is not installed (comes with gradio)")

from keep.cli import main  # noqa: E402
from keep.demo.job import DemoSettings, ModelCache, RestoreJob  # noqa: E402
from keep.demo.workspace import Limits, Workspace, check_length, prepare_input  # noqa: E402
from keep.io import open_source  # noqa: E402
from keep.io.errors import InputError  # noqa: E402
from keep.io.samples import write_sample_clip  # noqa: E402

from shared_material import VIDEOS, require  # noqa: E402
from test_restore import decode, tiny_weights  # noqa: E402,F401  (fixture)

ROOT = Path(__file__).resolve().parents[1]
FRAMES = 10          # frames 40-49 of real_1 (388x512, 20 fps): one face, found by dlib
FPS = 20
WINDOW = 3           # the page's window slider is left at its default in the browser; the client sets 3
CARRIED = "carried across windows"   # keep.demo.app.STATE_CARRIED (the page's label)
SCREENSHOT = ROOT / "docs" / "images" / "demo.png"
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def wild_clip(tmp_path_factory):
    with open_source(require(VIDEOS / "real_1.mp4")) as source:
        frames = [f.image for f in itertools.islice(source, 40, 40 + FRAMES)]
    return write_sample_clip(frames, tmp_path_factory.mktemp("clips") / "wild.mp4", tone_hz=None)


@pytest.fixture(scope="module")
def broken_clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("clips") / "broken.mp4"
    path.write_bytes(b"this is not a video\n" * 200)
    return path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def app(tmp_path_factory, tiny_weights):  # noqa: F811
    """``keep demo`` in a subprocess with HOME, TMPDIR and its working directory pointed at empty
    folders: when it stops, they and its --workdir must be empty again (nothing written outside the
    working folder, everything removed)."""
    base = tmp_path_factory.mktemp("demo")
    dirs = {name: base / name for name in ("work", "home", "tmp", "cwd")}
    for folder in dirs.values():
        folder.mkdir()
    port = _free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT), HOME=str(dirs["home"]), TMPDIR=str(dirs["tmp"]),
               PYTHONDONTWRITEBYTECODE="1")
    # caches shared with the other commands (KEEP's weights cache; matplotlib's font list, as Gradio imports
    # matplotlib; the empty torchinductor_<user> folder torch makes on import) are not the app's files:
    # they get folders of their own here so that HOME and TMPDIR can be checked
    for variable, name in (("KEEP_WEIGHTS_DIR", "weights-cache"), ("MPLCONFIGDIR", "matplotlib"),
                           ("TORCHINDUCTOR_CACHE_DIR", "inductor")):
        env[variable] = str(tmp_path_factory.mktemp(name))
    process = subprocess.Popen(
        [sys.executable, "-m", "keep.cli", "demo", "--port", str(port), "--weights", str(tiny_weights),
         "--device", "cpu", "--threads", "1", "--no-download", "--workdir", str(dirs["work"]),
         "--max-frames", "100"],
        cwd=dirs["cwd"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    reader = threading.Thread(target=lambda: lines.extend(process.stdout), daemon=True)
    reader.start()
    deadline = time.monotonic() + 90
    while not any("working folder" in line for line in lines):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail("keep demo did not start:\n" + "".join(lines))
        time.sleep(0.1)
    yield {"url": f"http://127.0.0.1:{port}/", "dirs": dirs, "log": lines, "weights": str(tiny_weights)}
    process.send_signal(signal.SIGTERM)
    try:
        rc = process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail("keep demo did not stop within 60 s of SIGTERM")
    reader.join(5)
    log = "".join(lines)
    assert rc == 0, log
    assert "Traceback" not in log, log
    for name, folder in dirs.items():
        left = sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))
        assert not left, f"keep demo left files in its {name} folder: {left[:10]}"


def _client(app, tmp_path):
    return gradio_client.Client(app["url"], verbose=False, download_files=str(tmp_path))


def _restore_args(app, clip, detector="dlib"):
    # the page's inputs, in order: upload, checkpoint, weights, aligned, detector, all faces, window,
    # Kalman state, image baseline, background upsampler, precision, CRF
    return [gradio_client.handle_file(str(clip)), None, app["weights"], False, detector, False, WINDOW, CARRIED,
            False, "none", "fp32", 18]


def _frame_count(path) -> int:
    return len(decode(path)[1])


def test_banner_names_the_commands_share_flag(app):
    """Issue 24: Gradio's banner says to set share=True in launch(), which a keep demo user cannot do."""
    log = "".join(app["log"])
    assert f"keep demo: running on {app['url']}" in log
    assert "start it with --share" in log and "share=True" not in log and "launch()" not in log


# ------------------------------------------------------------------------------------- Python client
@pytest.mark.timeout(180)
def test_client_restores_a_clip_like_keep_restore(app, wild_clip, tiny_weights, tmp_path):  # noqa: F811
    client = _client(app, tmp_path / "client")
    job = client.submit(*_restore_args(app, wild_clip), api_name="/restore")
    statuses = [update[0] for update in job]
    (status, video, compare, slider, input_frame, output_frame, crop, face, caption, summary, downloads) = \
        job.outputs()[-1]
    assert status.startswith(f"**Done:** wild: {FRAMES} frames, {FRAMES} faces in "), status
    assert any(s.startswith("Restoring:") for s in statuses), statuses      # progress was shown
    # the restored video: the input's frame count, rate and size; the side by side is twice as wide
    rate, frames, _ = decode(video)
    assert (len(frames), rate, frames[0].shape) == (FRAMES, FPS, (512, 388, 3))
    _, side_by_side, _ = decode(compare)
    assert len(side_by_side) == FRAMES and side_by_side[0].shape == (512, 776, 3)
    # the same VideoRestorer as `keep restore`: the same output frames (the pipeline's PNGs, shown by the
    # frame viewer; the MP4s are not compared: x264 does not give the same bytes run to run here)
    out = tmp_path / "cli"
    assert main(["restore", str(wild_clip), "-o", str(out), "--weights", str(tiny_weights), "--detector", "dlib",
                 "--window", str(WINDOW), "--no-progress", "--device", "cpu", "--save-frames"]) == 0
    reference = sorted((out / "wild" / "final_frames").glob("*.png"))
    assert len(reference) == FRAMES
    views = [client.predict(i, api_name="/frame") for i in range(FRAMES)]
    for i, (view, expected) in enumerate(zip(views, reference)):
        assert view[4].startswith(f"frame {i + 1} of {FRAMES}"), view[4]
        assert Path(view[1]).name == expected.name and np.array_equal(_png(Path(view[1])), _png(expected))
        assert _png(Path(view[0])).shape == (512, 388, 3)                      # the input frame
        assert _png(Path(view[2])).shape == _png(Path(view[3])).shape == (128, 128, 3)  # crop before / after
    assert not np.array_equal(_png(Path(views[0][1])), _png(Path(views[-1][1])))
    assert Path(output_frame).name == "00000000.png" and caption.startswith(f"frame 1 of {FRAMES}")
    assert slider["maximum"] == FRAMES - 1 and slider["interactive"] is True
    assert "1 track(s)" in summary and "detector dlib" in summary and "Traceback" not in summary
    names = sorted(Path(d).name for d in downloads)
    assert names == ["wild.mp4", "wild_faces.zip"]
    with zipfile.ZipFile(next(d for d in downloads if d.endswith(".zip"))) as zf:
        assert len([n for n in zf.namelist() if n.endswith(".png")]) == FRAMES


def _png(path: Path) -> np.ndarray:
    import cv2
    return cv2.imread(str(path))[..., ::-1]


@pytest.mark.timeout(120)
def test_client_errors_are_messages_not_tracebacks(app, broken_clip, wild_clip, tmp_path):
    client = _client(app, tmp_path)
    status = client.predict(*_restore_args(app, broken_clip), api_name="/restore")[0]
    assert status.startswith("**Error:**") and "broken.mp4" in status, status
    assert "Traceback" not in status and str(broken_clip.parent) not in status   # no server paths either
    # missing weights: the detector's file is not there and --no-download forbids fetching it
    status = client.predict(*_restore_args(app, wild_clip, detector="retinaface"), api_name="/restore")[0]
    assert status.startswith("**Error:**") and "Traceback" not in status, status
    text = status.replace("\\", "")                          # the page's Markdown escapes
    assert "is missing" in text and "detection_Resnet50_Final.pth" in text, text   # no download tried ...
    assert "KEEP_WEIGHTS_DIR" in text, text                                        # ... says where to put it
    assert client.predict(api_name="/cancel") == "Nothing is running."


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory):
    with open_source(require(VIDEOS / "real_1.mp4")) as source:
        frames = [f.image for f in itertools.islice(source, 60)]
    return write_sample_clip(frames, tmp_path_factory.mktemp("clips") / "long.mp4", tone_hz=None)


@pytest.mark.timeout(180)
def test_one_run_at_a_time_queue_position_and_cancel(app, long_clip, wild_clip, tmp_path):
    """Page A restores a long clip; page B, started meanwhile, waits in the queue and is told its
    position; A's Cancel stops A (its files removed) and B then runs to the end."""
    from gradio_client.utils import Status
    first, second = _client(app, tmp_path / "a"), _client(app, tmp_path / "b")
    running = first.submit(*_restore_args(app, long_clip), api_name="/restore")
    deadline = time.monotonic() + 60
    while not any(str(update[0]).startswith("Restoring:") for update in running.outputs()):
        assert time.monotonic() < deadline and not running.done(), running.outputs()
        time.sleep(0.1)
    waiting = second.submit(*_restore_args(app, wild_clip), api_name="/restore")
    positions = []
    deadline = time.monotonic() + 30
    while not positions and time.monotonic() < deadline:
        status = waiting.status()
        if status.code == Status.IN_QUEUE and status.rank is not None:
            positions.append(status.rank)
        time.sleep(0.05)
    assert positions == [0], positions                  # B is first in line behind A's run
    assert not any(str(u[0]).startswith(("Restoring:", "Starting")) for u in waiting.outputs())
    message = first.predict(api_name="/cancel")
    assert message.startswith("**Cancelled:**"), message
    result = waiting.result(timeout=120)
    assert result[0].startswith(f"**Done:** wild: {FRAMES} frames"), result[0]
    sessions = next(app["dirs"]["work"].glob("keep-demo-*")) / "sessions"   # the app's own folder in --workdir
    assert not list(sessions.glob(f"{first.session_hash}/run-*"))      # A's cancelled run: removed
    assert (sessions / second.session_hash / "run-1" / "output" / "wild.mp4").is_file()   # B's result


def test_cli_port_in_use_and_bad_limits_are_one_line_errors(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    command = [sys.executable, "-m", "keep.cli", "demo", "--device", "cpu", "--workdir", str(tmp_path / "work"),
               "--stop-after", "1"]
    bad = subprocess.run(command + ["--max-frames", "0"], env=env, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and bad.stderr.strip() == "keep demo: error: --max-frames must be positive, got 0"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        run = subprocess.run(command + ["--port", str(port)], env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 1 and "Traceback" not in run.stderr, run.stderr
    assert run.stderr.strip().splitlines()[-1] == (f"keep demo: error: port {port} on 127.0.0.1 is in use; "
                                                   f"pass --port with a free one")
    assert not (tmp_path / "work").exists() or not any((tmp_path / "work").iterdir())


# ------------------------------------------------------------------------------------- in-process job
def _aligned_clip(tmp_path, count):
    with open_source(require(VIDEOS / "synthetic_1.mp4")) as source:
        frames = [f.image for f in itertools.islice(source, count)]
    return frames, write_sample_clip(frames, tmp_path / "aligned.mp4", tone_hz=None)


def test_cancel_stops_the_run_and_removes_its_files(tmp_path, tiny_weights):  # noqa: F811
    _, clip = _aligned_clip(tmp_path, 8)
    folder = tmp_path / "run"
    folder.mkdir()
    job = RestoreJob(str(clip), DemoSettings(weights=str(tiny_weights), aligned=True, window=2), folder, Limits(),
                     ModelCache(download=False), device="cpu")
    on_frame = job._on_frame
    seen = []

    def cancel_after_two(summary, total):
        seen.append(summary.frames)
        if summary.frames == 2:
            job.cancel()
        on_frame(summary, total)
    job._on_frame = cancel_after_two
    job.run()
    assert job.state == "cancelled" and seen[-1] == 2 and job.result is None
    assert not folder.exists()            # the partial video, its frames and faces are gone


def test_limits_and_zip_of_frames(tmp_path, tiny_weights):  # noqa: F811
    frames, clip = _aligned_clip(tmp_path, 5)
    with pytest.raises(InputError, match=r"aligned is 5 frames long; this demo restores at most 4 frames"):
        check_length(clip, Limits(max_frames=4))
    with pytest.raises(InputError, match=r"accepts uploads up to 0.001 MB"):
        prepare_input(str(clip), tmp_path, Limits(max_upload_mb=0.001))
    # a zip of frames (in a sub-folder, with a path that tries to leave the run folder) is a frame folder
    import cv2
    archive = tmp_path / "frames.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for i, image in enumerate(frames):
            zf.writestr(f"clip/{i:03d}.png", cv2.imencode(".png", image[..., ::-1])[1].tobytes())
        zf.writestr("../../escape.png", cv2.imencode(".png", frames[0][..., ::-1])[1].tobytes())
        zf.writestr("__MACOSX/clip/._000.png", b"resource fork")
    clash = tmp_path / "clash.zip"
    with zipfile.ZipFile(clash, "w") as zf:
        zf.writestr("a/000.png", b"x")
        zf.writestr("b/000.png", b"x")
    with pytest.raises(InputError, match="same name in several folders"):
        prepare_input(str(clash), tmp_path / "clash", Limits())
    run = tmp_path / "run"
    run.mkdir()
    job = RestoreJob(str(archive), DemoSettings(weights=str(tiny_weights), aligned=True, window=2), run, Limits(),
                     ModelCache(download=False), device="cpu").run()
    assert job.state == "done", job.error
    assert not (tmp_path / "escape.png").exists() and not (tmp_path.parent / "escape.png").exists()
    # the member whose path climbs out ("..") and the macOS resource fork are not frames: skipped
    assert job.result.frames == len(frames) and _frame_count(job.result.video) == len(frames)
    assert sorted(p.name for p in (run / "input" / "frames").iterdir()) == [f"{i:03d}.png" for i in range(5)]
    # a corrupt zip is a message
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"PK\x03\x04 truncated")
    failed = RestoreJob(str(bad), DemoSettings(weights=str(tiny_weights), aligned=True), tmp_path / "bad",
                        Limits(), ModelCache(download=False), device="cpu").run()
    assert failed.state == "failed" and failed.error.startswith("bad.zip is not a readable zip archive")
    assert not (tmp_path / "bad").exists()


def test_workspace_removes_only_what_the_app_wrote(tmp_path):
    root = tmp_path / "work"
    root.mkdir()
    (root / "mine.txt").write_text("the user's")
    workspace = Workspace(root)
    # Gradio serves what lies in its folder: the app's is a fresh one, so the user's files are not in it
    assert workspace.root.parent == root.resolve() and not list(workspace.root.iterdir())
    session = workspace.session("abc")
    run = session.new_run_folder()
    (run / "out.mp4").write_bytes(b"x")
    upload = workspace.root / ("f" * 64) / "clip.mp4"
    upload.parent.mkdir()
    upload.write_bytes(b"x")
    session.remember_upload(str(upload))
    (workspace.root / "gradio-scratch").mkdir()
    # another page uploaded the same bytes (Gradio stores them once): the file stays while it needs it
    workspace.session("other").remember_upload(str(upload))
    workspace.end_session("abc")
    assert not session.folder.exists() and upload.is_file()
    workspace.end_session("other")
    assert not upload.parent.exists()
    workspace.close()
    assert sorted(p.name for p in root.iterdir()) == ["mine.txt"]


# ------------------------------------------------------------------------------------- real browser
def _chromium():
    """Playwright and Debian's chromium, or a skip that says which one is missing."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install playwright; the test extra has it)")
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        pytest.skip("no chromium on PATH (apt-get install -y chromium; .ci/run installs it)")
    return sync_playwright, executable


def _small_png(png: bytes) -> bytes:
    """The screenshot as a 256-colour optimised PNG (the page is flat colours: it still reads well)."""
    import io

    from PIL import Image
    image = Image.open(io.BytesIO(png)).convert("RGB")
    assert image.size == (1280, 800)
    out = io.BytesIO()
    image.quantize(256, dither=Image.Dither.NONE).save(out, "PNG", optimize=True)
    return out.getvalue()


VIDEO_STATE = """async (video) => {
    video.muted = true;
    if (video.readyState < 1) await new Promise(r => video.addEventListener('loadedmetadata', r, {once: true}));
    const duration = video.duration;
    await video.play();
    if (!video.ended) await new Promise(r => video.addEventListener('ended', r, {once: true}));
    return {duration, ended: video.ended, played: video.played.length ? video.played.end(0) : 0,
            width: video.videoWidth, height: video.videoHeight, error: video.error && video.error.code};
}"""


@pytest.mark.timeout(180)
def test_browser_restores_plays_and_steps_through_frames(app, wild_clip, broken_clip, tmp_path):
    sync_playwright, executable = _chromium()
    with sync_playwright() as playwright:
        try:
            browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        except Exception as err:   # a chromium that cannot start here (missing libraries): say so
            pytest.skip(f"chromium at {executable} does not start: {str(err).splitlines()[0]}")
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(app["url"], wait_until="load")
            page.locator("#start").wait_for()
            page.locator("#upload input[type=file]").set_input_files(str(wild_clip))
            page.locator("#upload").get_by_text("wild.mp4").first.wait_for(timeout=30_000)   # uploaded
            page.get_by_label("dlib").check()
            page.locator("#start").click()
            status = page.locator("#status")
            status.get_by_text("Done:").wait_for(timeout=120_000)
            assert f"wild: {FRAMES} frames, {FRAMES} faces" in status.inner_text()
            # the restored video plays to its end in the browser, and lasts the input's frames / rate
            state = page.locator("#restored video").evaluate(VIDEO_STATE)
            assert state["error"] is None and state["ended"] is True, state
            assert (state["width"], state["height"]) == (388, 512), state
            assert abs(state["duration"] - FRAMES / FPS) <= 1.0 / FPS + 1e-3, state
            assert abs(state["played"] - state["duration"]) <= 1.0 / FPS, state
            compare = page.locator("#compare video").evaluate(VIDEO_STATE)
            assert compare["ended"] is True and (compare["width"], compare["height"]) == (776, 512), compare
            page.locator("#restored video").evaluate("v => { v.currentTime = 0; }")
            page.locator("#compare video").evaluate("v => { v.currentTime = 0; }")
            page.evaluate("window.scrollTo(0, 0)")
            shot = _small_png(page.screenshot(type="png"))
            (tmp_path / "demo.png").write_bytes(shot)
            assert len(shot) < 300_000, f"screenshot of {len(shot)} bytes"
            if os.environ.get("KEEP_UPDATE_SCREENSHOT"):    # docs/images/demo.png is made here
                SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
                SCREENSHOT.write_bytes(shot)
            # the frame slider: the viewer follows it (the caption, the output frame and its file)
            output_image = page.locator("#output-frame img")
            first_src = output_image.get_attribute("src")
            assert "00000000.png" in first_src
            page.locator("#frame-slider input[type=range]").focus()
            page.keyboard.press("End")
            page.locator("#frame-caption").get_by_text(f"frame {FRAMES} of {FRAMES}").wait_for(timeout=30_000)
            page.wait_for_function("() => document.querySelector('#output-frame img').src.includes('00000009.png')",
                                   timeout=30_000)
            assert output_image.get_attribute("src") != first_src
            # a corrupt upload, on a fresh page (clearing the upload widget is timing-dependent under
            # load): a readable message on the page, no traceback
            page.reload(wait_until="load")
            page.locator("#start").wait_for()
            page.locator("#upload input[type=file]").set_input_files(str(broken_clip))
            page.locator("#upload").get_by_text("broken.mp4").first.wait_for(timeout=30_000)
            page.locator("#start").click()
            status.get_by_text("Error:").wait_for(timeout=60_000)
            assert "broken.mp4" in status.inner_text() and "Traceback" not in page.content()
        finally:
            browser.close()


@pytest.mark.parametrize("device, expected", [("cpu", 4), ("cuda", 20)])
def test_window_slider_starts_at_keep_restores_default_for_the_device(device, expected, tmp_path, monkeypatch):
    """The slider's default is the window `keep restore` uses without --window on the app's device (4 on
    the CPU, the release's 20 on a GPU; docs/restore.md), so a CPU demo shows its first frame as soon."""
    import gradio as gr
    import torch

    from keep.demo import app as app_module
    monkeypatch.setattr(app_module, "resolve_device", lambda _: torch.device(device))   # no GPU needed
    workspace = Workspace(tmp_path / "work")
    try:
        page = app_module.build_app(workspace, device=device, weights="keep-v1")
        sliders = [b for b in page.blocks.values() if isinstance(b, gr.Slider) and b.label.startswith("Window")]
        assert [s.value for s in sliders] == [expected]
    finally:
        workspace.close()
    # settings made without a window leave it to the restore's rule, as `keep restore` without --window
    assert DemoSettings().options(tmp_path, device).window is None
