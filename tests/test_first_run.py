"""Issue 24, what a newcomer meets on a first run: every missing file in one message before anything loads,
progress that moves before the first window is through the network, an honest estimate of the rest,
and the CPU's default window."""
import re
import urllib.error
import urllib.request

import numpy as np
import pytest
import torch

import keep.api
import keep.face.detect
from keep.archs.keep_net import KEEP
from keep.cli import main
from keep.io.samples import write_sample_clip
from keep.restore import pipeline, progress
from keep.restore.options import RestoreOptions
from keep.restore.preflight import check_model_files
from keep.restore.progress import RunProgress, default_window
from keep.weights import WEIGHTS, WeightsNotFoundError
from tests.tiny_models import random_tiny_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")
SIZE = 64   # the tiny network at 64 px: aligned frames are resized to it


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return random_tiny_checkpoint(tmp_path_factory.mktemp("w") / "tiny.pth", SIZE)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """10 frames of seeded noise: aligned mode needs no face."""
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8) for _ in range(10)]
    return write_sample_clip(frames, tmp_path_factory.mktemp("clips") / "noise.mp4", tone_hz=None)


@pytest.fixture
def empty_weights(tmp_path, monkeypatch):
    root = tmp_path / "weights"
    root.mkdir()
    monkeypatch.setenv("KEEP_WEIGHTS_DIR", str(root))
    return root


@pytest.fixture
def offline(monkeypatch):
    """No network: every download attempt is recorded and fails as an offline machine's does."""
    tried = []

    def refuse(request, *args, **kwargs):
        tried.append(getattr(request, "full_url", request))
        raise urllib.error.URLError("no route to host")
    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    return tried


@pytest.fixture
def loads(monkeypatch):
    """Records (and refuses) every network load: KEEP and RetinaFace."""
    calls = []

    def refuse(what):
        def load(*args, **kwargs):
            calls.append(what)
            raise AssertionError(f"{what} was loaded")
        return load
    monkeypatch.setattr(keep.api, "load_model", refuse("KEEP"))
    monkeypatch.setattr(keep.face.detect, "load_retinaface", refuse("RetinaFace"))
    return calls


def restore(capsys, clip, out, *args):
    status = main(["restore", str(clip), "-o", str(out), "--no-progress", *map(str, args)])
    return status, capsys.readouterr().err


def test_missing_detector_weights_stop_the_run_before_the_network_loads(tmp_path, clip, tiny, empty_weights,
                                                                        offline, loads, capsys):
    out = tmp_path / "out"
    status, err = restore(capsys, clip, out, "--weights", tiny)
    assert status == 1 and loads == []
    assert "Traceback" not in err and err.count("error:") == 1
    item = WEIGHTS["retinaface-resnet50"]
    assert "1 file(s) this run needs are missing or unusable; nothing was loaded" in err
    assert "retinaface-resnet50 (--detector retinaface (the default))" in err
    assert item.url in err and str(item.path(empty_weights)) in err     # where from, where to
    assert "--detector dlib" in err                                     # the offline way, in the same message
    assert "parsenet" not in err                                        # optional under --mask auto
    assert offline == [item.url]                                        # fetched once, before anything loaded
    assert not out.exists() and list(empty_weights.iterdir()) == []     # no folder left by the failed download


def test_every_missing_file_is_in_one_message(tmp_path, clip, empty_weights, offline, loads, capsys):
    status, err = restore(capsys, clip, tmp_path / "out", "--weights", "keep-v1", "--mask", "parse",
                          "--bg-upsampler", "realesrgan")
    assert status == 1 and loads == [] and err.count("error:") == 1
    assert "4 file(s) this run needs are missing or unusable" in err
    for name in ("keep-v1", "retinaface-resnet50", "parsenet", "realesrgan-x2"):
        assert f"  - {name} (" in err and WEIGHTS[name].filename in err
    assert sorted(offline) == sorted(WEIGHTS[n].url for n in ("keep-v1", "retinaface-resnet50", "parsenet",
                                                               "realesrgan-x2"))


def test_a_run_that_cannot_start_downloads_nothing(tmp_path, clip, empty_weights, offline, loads, capsys):
    """An unpublished checkpoint or a wrong --weights path cannot be fetched: the run stops at once, without
    downloading the other missing files first."""
    for weights, fragment in (("keep-v1-asian", "is not published"), (tmp_path / "nope.pth", "checkpoint not found")):
        status, err = restore(capsys, clip, tmp_path / "out", "--weights", weights)
        assert status == 1 and loads == [] and offline == []
        assert "2 file(s) this run needs are missing or unusable" in err and fragment in err
        assert "retinaface-resnet50" in err and "--detector dlib" in err


def test_offline_dlib_setup_with_only_its_weights_passes(tmp_path, tiny, empty_weights, offline):
    check_model_files(RestoreOptions(tmp_path, weights=str(tiny), detector="dlib"))
    assert offline == []
    with pytest.raises(WeightsNotFoundError, match="parsenet .--mask parse"):
        check_model_files(RestoreOptions(tmp_path, weights=str(tiny), detector="dlib", mask="parse"))


def test_network_bar_moves_per_face_before_the_first_frame_is_written(tmp_path, clip, tiny, monkeypatch):
    seen, lines = [], []

    class Recording(RunProgress):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, report=lines.append, **kwargs)

        def _faces_done(self, *args):
            super()._faces_done(*args)
            seen.append((self.network.n, self.frames.n))   # (faces on the network bar, frames written)
    monkeypatch.setattr(pipeline, "RunProgress", Recording)
    options = RestoreOptions(tmp_path / "out", weights=str(tiny), aligned=True, window=5, progress=True)
    pipeline.VideoRestorer(options).run(clip)
    # one step per face as it leaves the decoder, the first five before any frame of the window is written
    assert seen == [(n, 0) for n in range(1, 6)] + [(n, 5) for n in range(6, 11)]
    assert len(lines) == 1 and lines[0].startswith("first frame written after ")
    assert "s a face" in lines[0] and "more for the other 9 frames" in lines[0]


def test_estimate_prices_the_rest_at_the_measured_network_and_pipeline_rates(monkeypatch):
    """Look-ahead frames are detected before the first window runs: an average of frames written over the
    time since the start (25 s / 1 frame * 9 = 225 s here) would count them again and again."""
    clock = [0.0]
    monkeypatch.setattr(progress.time, "perf_counter", lambda: clock[0])
    bar = RunProgress(torch.nn.Module(), "clip", 10, enabled=False, faces_per_frame=lambda: 1.0)
    for _ in range(5):                 # 5 frames decoded and detected, 1 s each
        clock[0] += 1
        bar.decoded()
    bar._call_started(None, (torch.zeros(4, 3, 4, 4),))   # the first call, at 5 s: 10 s a face
    for step in range(2):
        clock[0] += 10
        bar._faces_done(None, None, torch.zeros(1, 3, 4, 4))
        if step == 0:
            first_postfix = bar.network.postfix
    # shown on the network bar from the first face on: 9 faces at 10 s + 5 frames at (15 - 10) s / 5 frames
    assert first_postfix == "10.0 s a face, about 95 s left"
    bar.written(1)
    # 8 faces left at 10 s + 5 frames left at (25 - 20) s / 5 frames
    assert bar.eta() == pytest.approx(8 * 10 + 5 * 1)
    assert bar.first_line == "first frame written after 25 s (network: 10.0 s a face); about 85 s more for the " \
                             "other 9 frames"
    bar.close()


def test_default_window_is_four_on_the_cpu_and_twenty_elsewhere(tmp_path, clip, tiny, monkeypatch, capsys):
    assert default_window(torch.device("cpu")) == 4
    assert default_window(torch.device("cuda")) == default_window(torch.device("mps")) == 20
    calls = []
    inner = KEEP.restore_window

    def recording(self, x, *args, **kwargs):
        calls.append(x.shape[1])
        return inner(self, x, *args, **kwargs)
    monkeypatch.setattr(KEEP, "restore_window", recording)
    status, err = restore(capsys, clip, tmp_path / "a", "--weights", tiny, "--aligned", "--device", "cpu")
    assert status == 0, err
    assert calls == [4, 4, 2]          # 10 frames, windows of 4, the state carried
    calls.clear()
    status, err = restore(capsys, clip, tmp_path / "b", "--weights", tiny, "--aligned", "--window", "20")
    assert status == 0 and calls == [10]    # a window given is a window kept


def test_a_failed_download_removes_only_the_folders_it_made(tmp_path, offline):
    from keep.weights import download_weight
    root = tmp_path / "deep" / "weights"              # neither exists yet
    with pytest.raises(WeightsNotFoundError, match="could not download"):
        download_weight("parsenet", root=root, progress=False)
    assert offline and not (tmp_path / "deep").exists()
    # a folder that was there before (the user's, even empty) stays
    (root / "facelib").mkdir(parents=True)
    with pytest.raises(WeightsNotFoundError):
        download_weight("parsenet", root=root, progress=False)
    assert (root / "facelib").is_dir() and list((root / "facelib").iterdir()) == []


def test_boundary_table_of_short_clips_prints_no_nan_rows():
    from keep.evaluation.boundary import boundary_markdown, boundary_report
    short = boundary_report({"KEEP": {"psnr": [np.arange(5.0)], "flicker": [np.arange(5.0)]}}, window=20)
    text = boundary_markdown(short, 20)
    assert not re.search(r"\bnan\b", text) and "|" not in text and "No clip is longer than 20 frames" in text
    # a long clip's rows are printed; a column with no value at its boundary frames is left out, and said so
    mixed = boundary_report({"KEEP": {"psnr": [np.arange(25.0)], "ids": [np.r_[np.ones(20), np.full(5, np.nan)]]}},
                            window=20)
    text = boundary_markdown(mixed, 20)
    # boundary: frame 20; inside: frames 1..24 but 20, mean (190 + 90) / 23
    assert not re.search(r"\bnan\b", text) and "| KEEP | `psnr` | 20 | 12.1739 | 1.6429 | 1 | 23 |" in text
    assert "`ids`" not in text and "1 method/column pair(s) left out" in text


def test_lpips_backbones_are_registered_where_lpips_reads_them(tmp_path, monkeypatch, capsys):
    """`keep download lpips-alexnet` must put the file where the lpips package (through torchvision) loads
    it: torchvision's own URL and file name for AlexNet_Weights / VGG16_Weights, in torch hub's cache."""
    from keep.metrics.lpips_metric import backbone_file
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    for name, net in (("lpips-alexnet", "alex"), ("lpips-vgg16", "vgg")):
        url, path = backbone_file(net)
        assert (WEIGHTS[name].url, WEIGHTS[name].path(tmp_path / "weights")) == (url, path)
        assert path.name.split("-")[-1].split(".")[0] == WEIGHTS[name].sha256
    assert main(["download", "--list", "--dir", str(tmp_path / "weights")]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.split()[:1] == ["lpips-alexnet"])
    assert str(backbone_file("alex")[1]) in row and "missing" in row


def test_training_log_lines_do_not_run_into_the_progress_bar(tmp_path):
    """The trainer logs while its tqdm bar is on screen: each log line must start a line of its own."""
    import io
    import logging

    from tqdm import tqdm

    from keep.engine.logger import TqdmConsole, setup_logging
    log = setup_logging(tmp_path / "run", is_main=True)
    assert any(isinstance(h, TqdmConsole) for h in log.handlers)
    screen = io.StringIO()
    console = next(h for h in log.handlers if isinstance(h, TqdmConsole))
    console.stream = screen
    with tqdm(total=10, desc="stage 2", file=screen, mininterval=0, ascii=True) as bar:
        bar.update(3)
        log.info("step 3: loss 0.25")
        bar.update(1)
    lines = screen.getvalue().replace("\r", "\n").split("\n")
    logged = [line for line in lines if "step 3: loss 0.25" in line]
    assert len(logged) == 1 and logged[0].split(" INFO ")[-1] == "step 3: loss 0.25"
    assert "stage 2" not in logged[0]                 # not glued to the bar
    for handler in list(log.handlers):
        handler.close()
        log.removeHandler(handler)
    logging.getLogger("keep.train").handlers.clear()


def test_quick_start_puts_the_cpu_install_first_and_keeps_what_ci_runs():
    """README's quick start: the CPU build's install is its first command (a plain install pulls CUDA
    wheels), and the test command is the one .ci/run runs, verbatim."""
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text()
    quick = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    commands = [line for block in quick.split("```bash")[1:] for line in block.split("```")[0].splitlines() if line]
    assert commands[0] == "pip install torch torchvision --index-url https://download.pytorch.org/whl/cpu"
    assert commands[1] == "pip install -e . && keep restore path/to/video.mp4 -o results"
    ci = (root / ".ci" / "run").read_text().splitlines()
    assert ci[-2:] == ['pip install -e ".[test]"', "python -m pytest -q tests"]
    assert 'pip install -e ".[test]" && python -m pytest -q tests' in commands
    assert "not tried here" not in readme
