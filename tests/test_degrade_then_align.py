"""Training samples made as the release's loader makes them (``align: after_degradation``): unaligned
frames -> flip (frames and landmarks) -> degradation -> GT aligned with the landmarks, LQ with
landmarks / scale. References here are written with OpenCV directly, not with the dataset's helpers."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from keep.config import ConfigError, from_dict, load_config
from keep.data.dataset import ClipDatasetConfig, VideoClipDataset, to_uint8
from keep.data.degradation import degrade_clip, sample_params
from keep.data.sampling import sample_window
from keep.data.vfhq import read_annotation, write_annotation
from keep.engine.config import TrainConfig
from keep.evaluation.clips import write_frames
from keep.face.align import FFHQ_TEMPLATE_512
from keep.io import read_frames

from shared_material import VIDEOS, require

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
BORDER = (132, 133, 135)   # the release's (135, 133, 132) BGR
NAME = "real_1"


@pytest.fixture(scope="module")
def vfhq_clip(tmp_path_factory):
    """Eight unaligned 388x512 frames of real_1 in a clip folder and their dlib landmarks in the
    annotation format; returns (root, landmarks folder, frames, landmarks as written)."""
    pytest.importorskip("dlib")
    from keep.face.detect import DlibDetector
    detector = DlibDetector()
    frames = read_frames(require(VIDEOS / "real_1.mp4"), max_frames=8)
    found = [detector.detect(f) for f in frames]
    assert all(found), "dlib found no face in real_1"
    tmp = tmp_path_factory.mktemp("vfhq")
    write_frames(frames, tmp / "clips" / NAME)
    write_annotation(tmp / "landmarks" / f"{NAME}.txt", [f"{i:08d}.png" for i in range(len(frames))],
                     np.stack([f[0].landmarks for f in found]), {"FPS": "25"})
    written = read_annotation(tmp / "landmarks" / f"{NAME}.txt").landmarks   # 3 decimals, as the dataset reads them
    return tmp / "clips", tmp / "landmarks", frames, written


def _dataset(root, marks, **kw):
    data = {"root": str(root), "landmarks": str(marks), "clip_length": 4, "gt_size": 512, "hflip_prob": 0.0,
            "degradation": {"protocol": "release", "upsample": False, "crf": [30, 31]}}
    data.update(kw)
    return VideoClipDataset(from_dict(ClipDatasetConfig, data))


def _warp(image, points, template, size):
    m = cv2.estimateAffinePartial2D(np.ascontiguousarray(points), template, method=cv2.LMEDS)[0]
    return cv2.warpAffine(image, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=BORDER)


def _unaligned(frames, landmarks, window, flip):
    """The window as the release's loader sees it: cropped to 384 wide (a multiple of 8), mirrored with
    the landmarks (x -> W - 1 - x, left/right eye and mouth corner swapped) when the flip is drawn."""
    clip, points = frames[window][:, :, :384].copy(), landmarks[window].copy()
    if flip:
        clip = np.ascontiguousarray(clip[:, :, ::-1])
        points = points[:, [1, 0, 2, 4, 3]]
        points[..., 0] = 383 - points[..., 0]
    return clip, points


def _draws(cfg, epoch, index):
    """The sample's generator replayed: window, flip, degradation params (the dataset's draw order)."""
    rng = np.random.default_rng([cfg.seed, epoch, index])
    window = sample_window(8, cfg.clip_length, cfg.intervals, rng, cfg.reverse_prob)
    flip = rng.uniform() < cfg.hflip_prob
    return window, flip, sample_params(cfg.degradation, rng), rng


@pytest.mark.parametrize("hflip_prob", [0.0, 1.0])
def test_gt_is_a_direct_warp_and_lq_the_degraded_unaligned_window_warped(vfhq_clip, hflip_prob):
    root, marks, frames, landmarks = vfhq_clip
    ds = _dataset(root, marks, hflip_prob=hflip_prob)
    assert ds.cfg.align == "after_degradation" and ds.cfg.landmark_sigma == 0.0   # the release's defaults
    sample = ds[(0, 1)]
    window, flip, params, rng = _draws(ds.cfg, 0, 1)
    assert flip == bool(hflip_prob) and sample["key"] == f"{NAME}/{window[0]:06d}"
    clip, points = _unaligned(frames, landmarks, window, flip)
    gt, lq = to_uint8(sample["gt"]), to_uint8(sample["lq"])
    assert gt.shape == (4, 512, 512, 3) and lq.shape == (4, 128, 128, 3)
    # (1) GT: the (flipped) unaligned frame warped with the same unsmoothed landmarks, exactly
    for t in range(4):
        np.testing.assert_array_equal(gt[t], _warp(clip[t], points[t], FFHQ_TEMPLATE_512, 512))
    # (2) LQ: the unaligned window degraded as one video with the same params and generator state,
    # then warped with landmarks / 4 onto template / 4: exactly (same bytes from x264, see degradation.py)
    small = degrade_clip(clip, params, ds.cfg.degradation, rng)
    assert small.shape == (4, 128, 96, 3)
    for t in range(4):
        np.testing.assert_array_equal(lq[t], _warp(small[t], points[t] / 4, FFHQ_TEMPLATE_512 / 4, 128))
    if flip:   # the flipped face is a mirror image, not the unflipped crop (landmarks moved with it)
        unflipped = to_uint8(_dataset(root, marks)[(0, 1)]["gt"])
        assert np.abs(gt.astype(int) - unflipped[:, :, ::-1]).mean() < 12 and not np.array_equal(gt, unflipped)
    # deterministic per (seed, epoch, index)
    again = ds[(0, 1)]
    assert np.array_equal(to_uint8(again["lq"]), lq) and not np.array_equal(to_uint8(ds[(1, 1)]["lq"]), lq)


def test_release_order_differs_from_align_then_degrade(vfhq_clip):
    root, marks, _, _ = vfhq_clip
    after = _dataset(root, marks)[(0, 2)]
    before = _dataset(root, marks, align="before_degradation", landmark_sigma=0.0)[(0, 2)]
    gt_diff = np.abs(to_uint8(after["gt"]).astype(int) - to_uint8(before["gt"])).mean()
    lq_diff = np.abs(to_uint8(after["lq"]).astype(int) - to_uint8(before["lq"])).mean()
    # same crops (up to the 4 columns the release path crops off), different LQ: the order matters
    assert gt_diff < 0.5 and lq_diff > 2 * gt_diff + 1.0, (gt_diff, lq_diff)


def test_shipped_release_configs_align_after_degradation_when_landmarks_are_given(vfhq_clip):
    root, marks, frames, landmarks = vfhq_clip
    sets = [f"data.train.root={root}", f"data.train.landmarks={marks}"]
    cfg = load_config(TrainConfig, CONFIGS / "release" / "stage2.yaml", sets).data.train
    assert cfg.degradation.protocol == "release" and cfg.align == "after_degradation" and cfg.landmark_sigma == 0
    ds = VideoClipDataset(cfg)   # the full recipe: 8 frames, 512 GT, 128 LQ
    sample = ds[(0, 0)]
    window, flip, _, _ = _draws(cfg, 0, 0)
    clip, points = _unaligned(frames, landmarks, window, flip)
    gt = to_uint8(sample["gt"])
    assert gt.shape == (8, 512, 512, 3) and sample["lq"].shape == (8, 3, 128, 128)
    for t in range(8):
        np.testing.assert_array_equal(gt[t], _warp(clip[t], points[t], FFHQ_TEMPLATE_512, 512))
    # the paper recipe keeps align-then-degrade (smoothed landmarks); shipped configs without landmarks too
    paper = load_config(TrainConfig, CONFIGS / "paper" / "stage2.yaml", sets).data.train
    assert paper.align == "before_degradation" and paper.landmark_sigma == 5.0
    crops = load_config(TrainConfig, CONFIGS / "stage2.yaml").data.train
    assert crops.degradation.protocol == "release" and crops.align == "before_degradation"
    with pytest.raises(ConfigError, match="after_degradation needs landmarks"):
        load_config(TrainConfig, CONFIGS / "stage2.yaml", ["data.train.align=after_degradation"])
    with pytest.raises(ConfigError, match="data.align must be one of"):
        load_config(TrainConfig, CONFIGS / "release" / "stage2.yaml", sets + ["data.train.align=later"])
