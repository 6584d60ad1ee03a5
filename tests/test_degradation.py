"""The degradation: the paper (Eq. 9) and release protocols, against independent re-implementations;
codec frame rate; streaming; determinism, monotonicity, colour handling; Table A1 splits; `keep degrade`
resume / refusal / output errors."""
from __future__ import annotations

import io
import json

import av
import cv2
import numpy as np
import pytest

from keep.cli import main as keep_main
from keep.config import ConfigError, from_dict, to_dict
from keep.data.degradation import (PAPER_ORDER, RELEASE_ORDER, DegradationConfig, DegradationParams,
                                   degrade_clip, degrade_frames, encode_decode, gaussian_kernel_1d,
                                   rgb_to_yuv420, sample_params, yuv420_to_rgb)
from keep.evaluation.clips import write_frames
from keep.io import read_frames
from keep.evaluation.levels import TABLE_A1, clip_seed, level_config
from keep.metrics.psnr_ssim import psnr

from shared_material import SHARED, require


def _textured_clip(t=6, size=128, seed=0) -> np.ndarray:
    """A smooth moving texture (T, size, size, 3) uint8, deterministic, with detail that blur removes."""
    rng = np.random.default_rng(seed)
    base = cv2.resize(rng.integers(0, 256, (size // 8, size // 8, 3), dtype=np.uint8), (size * 2, size * 2),
                      interpolation=cv2.INTER_CUBIC)
    return np.stack([base[i * 2:i * 2 + size, i * 3:i * 3 + size] for i in range(t)])


def _clip_psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean([psnr(x, y) for x, y in zip(a, b)]))


def test_config_validation_and_defaults():
    cfg = from_dict(DegradationConfig, {"crf": [30, 40], "upsample": False})
    # the default protocol is the release's data code: its order, x264 at rate 1, noise per frame
    assert cfg.protocol == "release" and cfg.order == RELEASE_ORDER and cfg.fps == 1 and cfg.noise_per_frame
    assert cfg.channels == "bgr" and cfg.quantize == "truncate" and not cfg.crf_inclusive and cfg.deviations() == {}
    paper = from_dict(DegradationConfig, {"protocol": "paper"})
    assert paper.order == PAPER_ORDER and paper.fps == 25 and not paper.noise_per_frame and paper.gray_noise_prob == 0
    assert cfg.crf == (30, 40) and cfg.upsample is False
    # an explicit setting wins over the protocol and is reported; the resolved record round-trips
    faster = from_dict(DegradationConfig, {"protocol": "release", "fps": 25})
    assert faster.fps == 25 and faster.deviations() == {"fps": (25, 1)}
    assert to_dict(from_dict(DegradationConfig, to_dict(faster))) == to_dict(faster)
    with pytest.raises(ConfigError, match="protocol must be one of"):
        from_dict(DegradationConfig, {"protocol": "vfhq"})
    with pytest.raises(ConfigError, match="unknown config key"):
        from_dict(DegradationConfig, {"jpeg": [30, 40]})
    with pytest.raises(ConfigError, match="crf"):
        from_dict(DegradationConfig, {"crf": [40, 30]})
    with pytest.raises(ConfigError, match="unknown step"):
        from_dict(DegradationConfig, {"order": ["blur", "sharpen", "downsample"]})
    with pytest.raises(ConfigError, match="odd"):
        from_dict(DegradationConfig, {"blur_kernel_size": 40})
    with pytest.raises(ConfigError, match="fps"):
        from_dict(DegradationConfig, {"fps": 0})


def test_gaussian_kernel_matches_opencv():
    for sigma in (2.0, 5.5, 10.0):
        ours = gaussian_kernel_1d(sigma, 41)
        ref = cv2.getGaussianKernel(41, sigma, cv2.CV_64F)[:, 0]
        np.testing.assert_allclose(ours, ref, rtol=1e-10, atol=1e-12)


def test_sample_params_ranges_per_protocol():
    rng = np.random.default_rng(1)
    paper = [sample_params(DegradationConfig(protocol="paper", crf=(18, 20)), rng) for _ in range(300)]
    assert {p.crf for p in paper} == {18, 19, 20}          # both ends reachable
    assert all(2.0 <= p.blur_sigma <= 10.0 and 0.0 <= p.noise_sigma <= 10.0 for p in paper)
    assert {p.downsample_interp for p in paper} == {None}  # fixed bicubic
    assert set(paper[0].to_dict()) == {"blur_sigma", "noise_sigma", "crf", "seed", "downsample_interp"}
    release = [sample_params(DegradationConfig(protocol="release", crf=(18, 20)), rng) for _ in range(300)]
    assert {p.crf for p in release} == {18, 19}            # randint: the upper end excluded, as the release
    assert {p.noise_sigma for p in release} == {None}      # drawn per frame and noise step instead
    assert {p.downsample_interp for p in release} == {"area", "bilinear", "bicubic"}   # one per clip
    assert sample_params(DegradationConfig(crf=(30, 30)), rng).crf == 30


def test_shapes_orders_and_determinism():
    clip = _textured_clip()
    params = DegradationParams(blur_sigma=3.0, noise_sigma=5.0, crf=30, seed=7)
    paper = DegradationConfig(protocol="paper")
    up = degrade_clip(clip, params, paper)
    small = degrade_clip(clip, params, DegradationConfig(protocol="paper", upsample=False))
    release = degrade_clip(clip, params, DegradationConfig(protocol="paper", upsample=False, order=list(RELEASE_ORDER)))
    assert up.shape == clip.shape and up.dtype == np.uint8
    assert small.shape == (6, 32, 32, 3) and release.shape == small.shape
    assert not np.array_equal(small, release)               # the release order is a different model
    again = degrade_clip(clip, params, paper)
    assert again.tobytes() == up.tobytes()                  # same seed -> same bytes
    other = degrade_clip(clip, DegradationParams(3.0, 5.0, 30, seed=8), paper)
    assert not np.array_equal(other, up)                    # the seed drives the noise
    streamed = np.stack(list(degrade_frames((f for f in clip), params, paper)))
    assert streamed.tobytes() == up.tobytes()               # frame by frame = whole clip
    with pytest.raises(ValueError, match="draw them with sample_params"):
        degrade_clip(clip, params, DegradationConfig(protocol="release"))   # random interp, none in params


def _eq9_reference(clip, params, crf, fps):
    """Eq. 9 as printed, written independently on the whole clip: blur (2-D kernel) -> bicubic x1/4
    -> one delta for the clip, fresh noise per frame -> round -> H.264 at ``fps`` -> decode."""
    rng = np.random.default_rng(params.seed)
    k = cv2.getGaussianKernel(41, params.blur_sigma, cv2.CV_64F)
    x = np.stack([cv2.filter2D(f.astype(np.float64), -1, k @ k.T) for f in clip])
    x = np.stack([cv2.resize(f, (f.shape[1] // 4, f.shape[0] // 4), interpolation=cv2.INTER_CUBIC) for f in x])
    x = np.stack([np.clip(f + params.noise_sigma * rng.standard_normal(f.shape, dtype=np.float32), 0, 255) for f in x])
    return encode_decode(np.clip(np.rint(x), 0, 255).astype(np.uint8), crf, fps=fps)


def test_paper_protocol_is_eq9_as_printed():
    clip = _textured_clip(t=5, size=128)
    params = DegradationParams(blur_sigma=2.5, noise_sigma=4.0, crf=28, seed=3)
    ours = degrade_clip(clip, params, DegradationConfig(protocol="paper", upsample=False))
    ref = _eq9_reference(clip, params, 28, fps=25)
    assert np.abs(ours.astype(int) - ref.astype(int)).max() <= 1   # float32 vs float64 blur: at most one level
    assert np.abs(ours.astype(int) - ref.astype(int)).mean() < 0.05


def _release_reference(clip, params, noise_range, fps, size):
    """The release's VFHQRealDegradationDataset.__getitem__ steps, written independently in its own terms
    (BGR float64 arrays in [0, 1], cv2.filter2D with the 2-D kernel, BasicSR-style noise, astype(uint8)
    truncation, BGR bytes handed to the encoder as RGB, stream opened at ``fps``). Differences kept on
    purpose: the noise comes from numpy Generators (one per noise step, children of the clip's seed),
    and RGB->YUV is the explicit BT.601 conversion instead of swscale's (docs/protocol.md)."""
    first, second = np.random.default_rng(params.seed).spawn(2)
    imgs = [f[..., ::-1] / 255.0 for f in clip]                    # PIL RGB -> [:, :, ::-1] / 255
    k = cv2.getGaussianKernel(41, params.blur_sigma, cv2.CV_64F)
    imgs = [cv2.filter2D(v, -1, k @ k.T) for v in imgs]

    def noise(v, rng):                                           # random_add_gaussian_noise(gray_prob=0.5)
        sigma = rng.uniform(*noise_range) / 255.0
        gray = rng.uniform() < 0.5
        n = rng.standard_normal(v.shape[:2] if gray else v.shape, dtype=np.float32)
        return np.clip(v + sigma * (n[..., None] if gray else n), 0, 1)

    imgs = [noise(v, first) for v in imgs]
    interp = {"area": cv2.INTER_AREA, "bilinear": cv2.INTER_LINEAR, "bicubic": cv2.INTER_CUBIC}[params.downsample_interp]
    imgs = [cv2.resize(v, (size, size), interpolation=interp) for v in imgs]
    imgs = [noise(v, second) for v in imgs]
    buf = io.BytesIO()
    with av.open(buf, "w", "mp4") as container:
        stream = container.add_stream("libx264", rate=fps, options={"crf": str(params.crf), "threads": "1",
                                                                    "x264-params": "asm=0"})
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for i, v in enumerate(imgs):
            data = np.clip(v * 255, 0, 255).astype(np.uint8)       # BGR bytes, called rgb24 by the release
            frame = av.VideoFrame.from_ndarray(rgb_to_yuv420(data), format="yuv420p")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    with av.open(buf, "r", "mp4") as container:
        out = [yuv420_to_rgb(f.to_ndarray(format="yuv420p")) for f in container.decode(video=0)]
    return np.stack([o[..., ::-1] for o in out])                 # back to RGB


def test_release_protocol_matches_an_independent_reimplementation():
    clip = np.stack([cv2.resize(f, (128, 128), interpolation=cv2.INTER_CUBIC) for f in _face_frames(5)])
    cfg = DegradationConfig(protocol="release", noise_sigma=(2.0, 6.0), upsample=False)
    for interp in ("area", "bicubic"):
        params = DegradationParams(blur_sigma=3.0, noise_sigma=None, crf=30, seed=11, downsample_interp=interp)
        ours = degrade_clip(clip, params, cfg)
        np.testing.assert_array_equal(ours, _release_reference(clip, params, (2.0, 6.0), fps=1, size=32))
    # the frame rate is part of it: the same steps at 25 fps give another clip
    assert not np.array_equal(ours, _release_reference(clip, params, (2.0, 6.0), fps=25, size=32))


def _face_frames(t):
    video = require(SHARED / "videos" / "synthetic_1.mp4")
    return read_frames(video, max_frames=t)


def test_codec_frame_rate_changes_the_lq_at_the_same_crf():
    """x264's rate control depends on the frame duration: at CRF 30, 25 fps compresses harder than 1 fps."""
    clip = np.stack([cv2.resize(f, (256, 256), interpolation=cv2.INTER_CUBIC) for f in _face_frames(6)])
    params = DegradationParams(blur_sigma=2.0, noise_sigma=1.0, crf=30, seed=0)
    clean = np.stack([cv2.resize(f, (64, 64), interpolation=cv2.INTER_CUBIC) for f in clip])
    at = {fps: degrade_clip(clip, params, DegradationConfig(protocol="paper", upsample=False, fps=fps))
          for fps in (1, 25)}
    assert np.abs(at[1].astype(int) - at[25].astype(int)).mean() > 1.0
    assert _clip_psnr(at[1], clean) > _clip_psnr(at[25], clean) + 1.0


def test_stronger_degradation_lowers_psnr():
    clip = _textured_clip(t=6, size=128)
    cfg = DegradationConfig(protocol="paper")

    def score(blur, noise, crf):
        return _clip_psnr(degrade_clip(clip, DegradationParams(blur, noise, crf, seed=0), cfg), clip)

    assert score(2.0, 2.0, 18) > score(2.0, 2.0, 45)       # CRF
    assert score(1.0, 2.0, 18) > score(8.0, 2.0, 18)        # blur
    assert score(2.0, 0.0, 18) > score(2.0, 10.0, 18)       # noise


def test_encoder_receives_rgb_as_rgb():
    """The release hands BGR arrays to PyAV as 'rgb24'; here a red clip must come back red, and the
    colour must survive the YUV 4:2:0 round trip within compression error."""
    red = np.zeros((4, 32, 32, 3), np.uint8)
    red[..., 0] = 200
    red[..., 2] = 40
    out = encode_decode(red, crf=18)
    assert out.shape == red.shape
    assert abs(float(out[..., 0].mean()) - 200) < 6 and abs(float(out[..., 2].mean()) - 40) < 6


def test_bad_input_errors():
    with pytest.raises(ValueError, match="uint8"):
        degrade_clip(np.zeros((2, 16, 16, 3), np.float32), DegradationParams(2, 0, 20), DegradationConfig())
    with pytest.raises(ValueError, match="divisible"):
        degrade_clip(np.zeros((2, 18, 16, 3), np.uint8), DegradationParams(2, 0, 20), DegradationConfig(protocol="paper"))


def test_table_a1_levels_and_seeds():
    for level, ranges in TABLE_A1.items():
        cfg = level_config(level)
        assert cfg.noise_sigma == ranges["noise_sigma"] and cfg.crf == ranges["crf"] and not cfg.upsample
        assert cfg.protocol == "release" and level_config(level, protocol="paper").order == PAPER_ORDER
    assert level_config("mild", fps=25).fps == 25
    assert level_config("heavy").crf == (35, 45) and level_config("mild").blur_sigma == (2.0, 5.0)
    assert clip_seed("mild", "Clip+000", 0) == clip_seed("mild", "Clip+000", 0)
    assert len({clip_seed("mild", "a"), clip_seed("heavy", "a"), clip_seed("mild", "b"), clip_seed("mild", "a", 1)}) == 4
    with pytest.raises(ValueError, match="unknown level"):
        level_config("extreme")


def test_degrades_a_real_clip_like_the_release_examples():
    video = require(SHARED / "videos" / "synthetic_1.mp4")
    frames = read_frames(video, max_frames=4)
    gt = np.stack([cv2.resize(f, (512, 512), interpolation=cv2.INTER_CUBIC) for f in frames])
    cfg = level_config("medium")
    rng = np.random.default_rng(clip_seed("medium", "synthetic_1"))
    lq = degrade_clip(gt, sample_params(cfg, rng), cfg, rng)
    assert lq.shape == (4, 128, 128, 3)
    assert 15.0 < _clip_psnr(lq, frames) < 40.0             # degraded but still the same face


def test_encoding_is_reproducible_on_small_frames():
    """Regression: with x264's default (SIMD) build, this 64x64 clip came out of the encoder with
    different bytes in ~9 of 10 runs; interleaved here with encodes/decodes of another clip."""
    clip = _textured_clip(t=3, size=256)
    params = DegradationParams(blur_sigma=6.0, noise_sigma=7.0, crf=30, seed=5)
    cfg = DegradationConfig(protocol="paper", upsample=False)
    other = np.random.default_rng(0).integers(0, 256, (3, 48, 64, 3), dtype=np.uint8)
    ref = degrade_clip(clip, params, cfg).tobytes()
    for _ in range(12):
        encode_decode(other, 40)
        assert degrade_clip(clip, params, cfg).tobytes() == ref


def test_yuv420_round_trip():
    smooth = _textured_clip(t=1, size=64)[0]
    planar = rgb_to_yuv420(smooth)
    assert planar.shape == (96, 64) and planar.dtype == np.uint8
    back = yuv420_to_rgb(planar)
    assert np.abs(back.astype(int) - smooth.astype(int)).mean() < 3.0
    grey = np.full((4, 4, 3), 128, np.uint8)                # neutral grey has no chroma
    assert np.all(rgb_to_yuv420(grey)[4:] == 128)


@pytest.fixture
def gt_root(tmp_path):
    root = tmp_path / "gt"
    clip = _textured_clip(t=3, size=64)
    write_frames(clip, root / "clip_a")
    write_frames(clip[::-1].copy(), root / "clip_b")
    return root


def _degrade(gt, out, *extra):
    return keep_main(["degrade", "--gt", str(gt), "--level", "medium", "-o", str(out), "--seed", "1", *extra])


def test_degrade_records_protocol_and_codec_fps(gt_root, tmp_path):
    assert _degrade(gt_root, tmp_path / "release") == 0
    record = json.loads((tmp_path / "release" / "clip_a.json").read_text())
    assert record["protocol"] == "release" and record["codec_fps"] == 1 and record["config"]["fps"] == 1
    assert record["config"]["order"] == RELEASE_ORDER and record["max_frames"] is None
    assert _degrade(gt_root, tmp_path / "fast", "--codec-fps", "25") == 0
    fast = json.loads((tmp_path / "fast" / "clip_a.json").read_text())
    assert fast["codec_fps"] == 25 and fast["config"]["fps"] == 25 and fast["params"] == record["params"]
    # same draw, same CRF, another frame rate: another LQ; the record alone regenerates each
    a, b = read_frames(tmp_path / "release" / "clip_a"), read_frames(tmp_path / "fast" / "clip_a")
    assert not np.array_equal(a, b)
    for rec, lq in ((record, a), (fast, b)):
        again = degrade_clip(read_frames(gt_root / "clip_a"), DegradationParams(**rec["params"]),
                             from_dict(DegradationConfig, rec["config"]))
        np.testing.assert_array_equal(again, lq)


@pytest.mark.parametrize("change", [["--level", "mild"], ["--seed", "2"], ["--order", "paper"], ["--max-frames", "2"],
                                    ["--protocol", "paper"], ["--codec-fps", "25"]])
def test_degrade_refuses_an_output_made_with_other_settings(gt_root, tmp_path, capsys, change):
    out = tmp_path / "lq"
    assert _degrade(gt_root, out) == 0
    stamp = (out / "clip_a" / "00000000.png").stat().st_mtime_ns
    args = ["degrade", "--gt", str(gt_root), "--level", "medium", "-o", str(out), "--seed", "1"]
    for i in range(0, len(change), 2):      # the change replaces the flag if it is already there
        if change[i] in args:
            args[args.index(change[i]) + 1] = change[i + 1]
        else:
            args += change[i:i + 2]
    capsys.readouterr()
    assert keep_main(args) == 2
    err = capsys.readouterr().err
    assert "already holds 2 clip(s) made with other settings" in err and "another -o" in err
    assert (out / "clip_a" / "00000000.png").stat().st_mtime_ns == stamp      # nothing touched
    assert _degrade(gt_root, out) == 0                                        # same settings: resumed
    assert (out / "clip_a" / "00000000.png").stat().st_mtime_ns == stamp


def test_degrade_output_errors_are_one_line_and_early(gt_root, tmp_path, capsys):
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a folder")
    assert _degrade(gt_root, blocker / "lq") == 1
    err = capsys.readouterr().err
    assert err.startswith("keep degrade: error: cannot write the output") and "Traceback" not in err
    assert err.count("\n") == 1
    assert _degrade(tmp_path / "missing", tmp_path / "lq") == 2
    assert "does not exist" in capsys.readouterr().err
