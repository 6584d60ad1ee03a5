"""The GPU code path of `keep restore`, run on CPU tensors so that CI (no GPU) can fail on it.

`RestoreOptions(device_path="force")` (or `KEEP_DEVICE_PATH=force` for the command line) makes the
pipeline take, on the CPU, the path it takes on a GPU: crops by ``grid_sample`` over the window's
frames, paste-back with the feathered (and parsing) mask as tensors, the compose of an upscaled
background, autocast fp16/bf16, overlapped stages (keep/restore/device_geometry.py). Each run is
compared with the OpenCV path of the same input.

Tolerance: OpenCV quantises its sampling positions to 1/32 px and its bilinear weights to 15 bits,
``grid_sample`` does neither, so a crop pixel may be off by a level or two at a sharp edge
(tests/test_pipeline.py measures the same on single crops). A restored face pasted back goes through
a second warp, so a final pixel may be off by the crop's error plus the paste's: allowed 2 levels
(measured 1), with a mean far below one level (measured: see the constants). A wrong matrix, a half-pixel shift, a
missing border colour, a mask that is not the OpenCV one or a gray face pasted in colour is off by
tens of levels over whole regions.

A random network is chaotic (a crop one level off comes out tens of levels off), so the geometry is
compared through a pass-through network (restored face = crop); the tiny KEEP network checks the
precisions, whose faces differ by design.
"""
import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from keep.cli import main
from keep.face.parsing import ParseMasker
from keep.io import write_image
from keep.io.source import read_frames
from keep.io.samples import write_sample_clip
from keep.restore import device_geometry
from keep.restore.options import RestoreOptions
from keep.restore.pipeline import VideoRestorer

from shared_material import VIDEOS
from test_restore import TINY_SIZE, frames_of, tiny_weights  # noqa: F401  (fixture)

pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.skipif(not (VIDEOS / "real_2.mp4").is_file(), reason=f"shared videos absent: {VIDEOS}")]

CROP_MAX_LEVELS = 2       # one warp (tests/test_pipeline.py: GEOMETRY_MAX_LEVELS)
FRAME_MAX_LEVELS = 2      # the crop's error carried through a second warp (measured: 1)
MEAN_LEVELS = 0.01        # measured 1e-5 - 3e-5 on the final frames: almost every pixel is equal


class PassThroughNet(torch.nn.Module):
    """Stand-in network: the restored face is the crop (fresh state every window)."""
    img_size = TINY_SIZE

    def restore_window(self, x, state=None, propagate=True):
        return x.clone(), None


class EllipseParseNet(torch.nn.Module):
    """Stand-in ParseNet: an elliptic "face" label with a "neck" label (14, dropped by the release's
    colour map) below it, whatever the pixels; ParseMasker's own blurs and frame do the rest."""

    def forward(self, x):
        h, w = x.shape[-2:]
        yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32),
                                indexing="ij")
        inside = ((xx - w / 2) / (0.36 * w)) ** 2 + ((yy - 0.45 * h) / (0.42 * h)) ** 2 < 1
        labels = torch.where(inside, 1, 0)
        labels = torch.where(inside & (yy > 0.75 * h), 14, labels)
        return (F.one_hot(labels, 19).permute(2, 0, 1)[None].float(),)


@pytest.fixture(scope="module")
def pair_frames():
    """Two faces side by side (real_1 | real_2, frames 40-44), 750x512."""
    return [np.concatenate(p, axis=1) for p in zip(frames_of("real_1.mp4", 5, start=40),
                                                     frames_of("real_2.mp4", 5, start=40))]


@pytest.fixture(scope="module")
def pair_clip(tmp_path_factory, pair_frames):
    return write_sample_clip(pair_frames, tmp_path_factory.mktemp("clips") / "pair.mp4", tone_hz=None)


@pytest.fixture(scope="module")
def gray_folder(tmp_path_factory, pair_frames):
    """The pair as gray PNG frames (three equal channels): the gray-face path."""
    folder = tmp_path_factory.mktemp("gray") / "pair"
    for i, frame in enumerate(pair_frames):
        gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
        write_image(folder / f"{i:04d}.png", np.repeat(gray[..., None], 3, axis=2))
    return folder


def _options(out, weights, **kw):
    base = dict(output_dir=out, weights=str(weights), detector="dlib", window=2, progress=False, mask="square",
                all_faces=True, save_frames=True, save_cropped=True, device="cpu")
    base.update(kw)
    return RestoreOptions(**base)


def _images(folder):
    paths = sorted(folder.glob("*.png"))
    return np.stack([cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in paths]) if paths else np.zeros((0,))


def _levels(a, b):
    diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
    return int(diff.max()), float(diff.mean())


def _run(out, weights, monkeypatch=None, masker=None, net=None, source=None, **kw):
    if masker is not None:
        monkeypatch.setattr(VideoRestorer, "_parse_masker", lambda self: masker)
    restorer = VideoRestorer(_options(out, weights, **kw), net=net)
    summary = restorer.run(source)
    name = source.stem if source.is_file() else source.name
    return restorer, summary, _images(out / name / "final_frames"), _images(out / name / "cropped_faces")


@pytest.mark.timeout(180)
@pytest.mark.parametrize("case", ["colour", "upscale2+parse", "gray+parse"])
def test_forced_device_path_matches_the_opencv_path(tmp_path, tiny_weights, pair_clip, gray_folder, monkeypatch,
                                                    case):
    upscale = 2 if "upscale2" in case else 1
    masker = ParseMasker(torch.device("cpu"), net=EllipseParseNet()) if "parse" in case else None
    source = gray_folder if case.startswith("gray") else pair_clip
    results = {}
    for path in ("auto", "force"):
        restorer, summary, frames, crops = _run(tmp_path / path, tiny_weights, monkeypatch, masker,
                                                net=PassThroughNet(), source=source, upscale=upscale,
                                                mask="parse" if masker else "square", device_path=path)
        assert restorer.device_geometry == (path == "force")
        assert summary.tracks == 2 and summary.frames == 5 and summary.frames_without_face == 0
        results[path] = frames, crops
    (frames_cv, crops_cv), (frames_dev, crops_dev) = results["auto"], results["force"]
    assert crops_cv.shape == crops_dev.shape == (10, TINY_SIZE, TINY_SIZE, 3)
    worst, mean = _levels(crops_cv, crops_dev)
    assert worst <= CROP_MAX_LEVELS and mean <= MEAN_LEVELS, (worst, mean)
    assert frames_cv.shape == frames_dev.shape == (5, 512 * upscale, 750 * upscale, 3)
    worst, mean = _levels(frames_cv, frames_dev)
    assert worst <= FRAME_MAX_LEVELS and mean <= MEAN_LEVELS, (worst, mean)
    # the faces were pasted (a pass-through face differs from the frame it came from: the crop was resized
    # to 128 and back) and the comparison is not between two unchanged backgrounds
    inputs = [cv2.resize(f, None, fx=upscale, fy=upscale, interpolation=cv2.INTER_LINEAR)[..., ::-1]
              for f in read_frames(source)]
    assert _levels(frames_cv, np.stack(inputs))[1] > 0.3
    if case.startswith("gray"):
        assert (frames_dev[..., 0] == frames_dev[..., 1]).all() and (frames_dev[..., 1] == frames_dev[..., 2]).all()


@pytest.mark.timeout(240)
def test_precisions_through_the_forced_device_path(tmp_path, tiny_weights, pair_clip):
    """fp16 / bf16 autocast and --strict-fp32 through the GPU code path, on CPU tensors."""
    flags = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    boxes = []
    record = device_geometry.DevicePaster.region

    def region(self, matrix, size, canvas_hw):
        plan = record(self, matrix, size, canvas_hw)
        boxes.append(plan[0])
        return plan
    runs = {}
    try:
        for precision in ("fp32", "fp32-strict", "bf16", "fp16"):
            device_geometry.DevicePaster.region = region
            _, summary, frames, crops = _run(tmp_path / precision, tiny_weights, source=pair_clip,
                                             precision=precision, device_path="force")
            assert summary.frames == 5 and summary.tracks == 2
            runs[precision] = frames, crops
    finally:
        device_geometry.DevicePaster.region = record
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = flags
    frames32, crops32 = runs["fp32"]
    # TF32 exists on CUDA only (keep/precision.py sets its switches for CUDA runs, tests/test_precision.py):
    # on the CPU strict fp32 is fp32, byte for byte
    assert np.array_equal(runs["fp32-strict"][0], frames32)
    outside = np.ones(frames32.shape[1:3], bool)
    for x0, y0, x1, y1 in boxes:
        outside[y0:y1, x0:x1] = False
    assert outside.mean() > 0.1
    for precision in ("bf16", "fp16"):
        frames, crops = runs[precision]
        assert np.array_equal(crops, crops32)          # the crops do not depend on the network's precision
        assert not np.array_equal(frames, frames32)    # autocast did run: reduced precision moves the faces
        assert np.array_equal(frames[:, outside], frames32[:, outside])   # and nothing outside them


@pytest.mark.timeout(180)
def test_command_line_forces_the_device_path_with_the_environment(tmp_path, tiny_weights, pair_clip, monkeypatch,
                                                                  capsys):
    args = ["restore", str(pair_clip), "--weights", str(tiny_weights), "--detector", "dlib", "--device", "cpu",
            "--window", "2", "--no-progress", "--mask", "square", "--save-cropped", "--all-faces"]
    monkeypatch.delenv(device_geometry.DEVICE_PATH_ENV, raising=False)
    assert main(args + ["-o", str(tmp_path / "cv")]) == 0
    assert main(args + ["-o", str(tmp_path / "refused"), "--bf16"]) == 1   # a user's --bf16 on the CPU
    assert "needs a GPU" in capsys.readouterr().err
    monkeypatch.setenv(device_geometry.DEVICE_PATH_ENV, "force")
    assert main(args + ["-o", str(tmp_path / "dev"), "--bf16"]) == 0
    crops_cv, crops_dev = _images(tmp_path / "cv" / "pair" / "cropped_faces"), \
        _images(tmp_path / "dev" / "pair" / "cropped_faces")
    assert crops_cv.shape == crops_dev.shape == (10, TINY_SIZE, TINY_SIZE, 3)
    worst, mean = _levels(crops_cv, crops_dev)
    assert 0 < worst <= CROP_MAX_LEVELS and mean <= MEAN_LEVELS   # 0 would mean the OpenCV path ran again
    monkeypatch.setenv(device_geometry.DEVICE_PATH_ENV, "sometimes")
    assert main(args + ["-o", str(tmp_path / "bad")]) == 1
    assert "KEEP_DEVICE_PATH" in capsys.readouterr().err
