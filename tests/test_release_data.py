"""The release's data recipe (issue 22), each against an independent computation: anisotropic rotated
Gaussian kernels (21 taps, iso p 0.7 / aniso p 0.3, σx, σy in [2, 10], θ in [-π, π]); resize
probabilities [0.3, 0.3, 0.4]; CRF 25..44 with both ends drawn; frame-uniform sampling with the
window centred on the keyed frame, random reverse p 0.5 and intervals 1..6; the global-batch rule;
each release stage initialised from the previous release stage's export."""
from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

from keep.config import from_dict, load_config
from keep.data.dataset import ClipDatasetConfig, VideoClipDataset
from keep.data.degradation import (DegradationConfig, DegradationParams, anisotropic_gaussian_kernel, degrade_clip,
                                   sample_params)
from keep.data.sampling import sample_window
from keep.engine.batching import per_process_batch
from keep.engine.config import TrainConfig
from keep.engine.errors import TrainSetupError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _release_degradation(stage: int = 2) -> DegradationConfig:
    return load_config(TrainConfig, CONFIGS / "release" / f"stage{stage}.yaml").data.train.degradation


def _kernel_by_formula(sx: float, sy: float, theta: float, size: int) -> np.ndarray:
    """Each tap on its own: the offset (x right, y down) turned into the kernel's axes by -θ."""
    k = np.zeros((size, size))
    half = size // 2
    for row in range(size):
        for col in range(size):
            x, y = col - half, row - half
            u = math.cos(theta) * x + math.sin(theta) * y
            v = -math.sin(theta) * x + math.cos(theta) * y
            k[row, col] = math.exp(-0.5 * (u * u / (sx * sx) + v * v / (sy * sy)))
    return k / k.sum()


@pytest.mark.parametrize("sx, sy, theta", [(2.0, 7.0, 0.4), (9.5, 3.0, -2.5), (5.0, 5.0, 1.0), (3.0, 8.0, math.pi / 2)])
def test_anisotropic_kernel_matches_the_formula(sx, sy, theta):
    got = anisotropic_gaussian_kernel(sx, sy, theta, 21)
    assert got.shape == (21, 21)
    assert np.allclose(got, _kernel_by_formula(sx, sy, theta, 21), rtol=1e-9, atol=1e-15)


def test_kernel_orientation_theta_zero_spreads_along_x():
    k = anisotropic_gaussian_kernel(6.0, 1.0, 0.0, 21)
    assert k[10, 16] > 100 * k[16, 10]          # wide along columns (x), narrow along rows (y)


def test_degrade_blurs_with_the_drawn_anisotropic_kernel():
    cfg = DegradationConfig(protocol="paper", order=["blur", "downsample"], scale=1, blur_kernel_size=21,
                            channels="rgb", upsample=False)
    frame = np.zeros((1, 41, 41, 3), np.uint8)
    frame[0, 20, 20] = 255
    params = DegradationParams(blur_sigma=2.0, noise_sigma=0.0, crf=25, blur_sigma_y=3.0, blur_theta=0.7)
    out = degrade_clip(frame, params, cfg)[0, 10:31, 10:31, 0].astype(np.float64)
    expected = 255 * _kernel_by_formula(2.0, 3.0, 0.7, 21)
    assert np.abs(out - expected).max() <= 0.51  # rounding to bytes only


def test_release_sampling_of_kernels_resize_and_crf():
    cfg = _release_degradation()
    assert cfg.blur_kernel_size == 21
    rng = np.random.default_rng(0)
    draws = [sample_params(cfg, rng) for _ in range(6000)]
    aniso = [p for p in draws if p.blur_theta is not None]
    assert abs(len(aniso) / len(draws) - 0.3) < 0.025
    for p in draws:
        assert 2 <= p.blur_sigma <= 10
    assert all(2 <= p.blur_sigma_y <= 10 and -math.pi <= p.blur_theta <= math.pi for p in aniso)
    assert min(p.blur_theta for p in aniso) < -2.8 and max(p.blur_theta for p in aniso) > 2.8
    assert sorted({p.crf for p in draws}) == list(range(25, 45))       # 25..44, both ends included
    counts = Counter(p.downsample_interp for p in draws)
    for name, prob in (("area", 0.3), ("bilinear", 0.3), ("bicubic", 0.4)):
        assert abs(counts[name] / len(draws) - prob) < 0.025, counts


def test_isotropic_configs_draw_and_record_as_before():
    cfg = DegradationConfig()
    a = sample_params(cfg, np.random.default_rng(5))
    assert a.blur_theta is None and "blur_theta" not in a.to_dict()
    rng = np.random.default_rng(5)  # the draws of the earlier code: blur, CRF, interpolation, nothing more
    blur = rng.uniform(2, 10)
    crf = int(rng.integers(25, 45))
    assert (a.blur_sigma, a.crf) == (blur, crf)


# ---------------------------------------------------------------- temporal sampling
def test_window_centred_on_the_keyed_frame_reversed_half_the_time():
    rng = np.random.default_rng(0)
    reversed_count, intervals = 0, Counter()
    for _ in range(3000):
        w = sample_window(100, 8, [1, 2, 3, 4, 5, 6], rng, reverse_prob=0.5, centre=50)
        step = w[1] - w[0]
        reversed_count += step < 0
        forward = sorted(w)
        intervals[abs(step)] += 1
        assert forward[4] == 50 and len(set(np.diff(forward))) == 1   # the keyed frame at position 8 // 2
    assert abs(reversed_count / 3000 - 0.5) < 0.04
    assert set(intervals) == {1, 2, 3, 4, 5, 6} and min(intervals.values()) > 400
    near_end = sample_window(20, 8, [2], rng, centre=19)              # would leave the clip: a valid window
    assert len(near_end) == 8 and 0 <= min(near_end) and max(near_end) < 20


def _clip_folder(root: Path, name: str, frames: int) -> None:
    folder = root / name
    folder.mkdir(parents=True)
    for i in range(frames):
        cv2.imwrite(str(folder / f"{i:04d}.png"), np.full((16, 16, 3), i, np.uint8))


def test_frame_sampling_weights_clips_by_their_frames(tmp_path):
    _clip_folder(tmp_path, "a_short", 10)
    _clip_folder(tmp_path, "b_long", 30)
    base = {"root": str(tmp_path), "gt_size": 16, "clip_length": 2, "intervals": [1], "hflip_prob": 0.0}
    by_clip = VideoClipDataset(from_dict(ClipDatasetConfig, base))
    by_frame = VideoClipDataset(from_dict(ClipDatasetConfig, {**base, "sampling": "frame"}))
    assert len(by_clip) == 2 and len(by_frame) == 40
    assert [by_frame._locate(i) for i in (0, 9, 10, 39, 40)] == [(0, 0), (0, 9), (1, 0), (1, 29), (0, 0)]
    sample = by_frame[(0, 15)]                      # clip b_long, frame 5 at position 1 of a 2-frame window
    assert sample["key"] == "b_long/000004"
    first_values = (sample["gt"][:, 0, 0, 0] + 1) * 127.5
    assert [round(float(v)) for v in first_values] == [4, 5]


# ---------------------------------------------------------------- global batch rule and chaining
def test_global_batch_is_kept_or_the_launch_refused():
    assert per_process_batch(1, 4, 4)[0] == 1
    per, note = per_process_batch(1, 4, 1)
    assert per == 4 and "global batch 4" in note
    assert per_process_batch(4, 2, 1)[0] == 8 and per_process_batch(4, 2, 8)[0] == 1
    per, note = per_process_batch(2, 0, 3)                 # gpus 0: batch_size per process, whatever W
    assert per == 2 and "global batch 6" in note
    with pytest.raises(TrainSetupError, match="cannot split evenly"):
        per_process_batch(1, 4, 3)


@pytest.mark.parametrize("folder", ["release", "paper"])
def test_each_stage_starts_from_the_previous_stage_of_the_same_recipe(folder):
    cfgs = {i: load_config(TrainConfig, CONFIGS / folder / f"stage{i}.yaml") for i in (1, 2, 3)}
    for stage in (2, 3):
        previous = cfgs[stage - 1]
        export = Path(previous.output_dir) / previous.name / "export.pth"
        assert Path(cfgs[stage].init[0].path) == export
