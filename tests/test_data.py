"""Training data: clip sampling, the resumable sampler, and the degraded clip dataset."""
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from keep.config import from_dict
from keep.data.dataset import ClipDatasetConfig, VideoClipDataset, to_uint8
from keep.data.sampler import StepSampler
from keep.data.sampling import sample_window
from keep.metrics.psnr_ssim import psnr

from shared_material import SHARED


def make_clips(root: Path, n_clips: int = 2, n_frames: int = 6, size: int = 64, detail: int = 4) -> Path:
    """Frame folders of a smooth random pattern (``detail`` = blob size in px) drifting by 1 px per
    frame (PNG, RGB)."""
    rng = np.random.default_rng(123)
    for c in range(n_clips):
        base = cv2.resize(rng.integers(0, 256, (size // detail, (size + n_frames) // detail + 1, 3), dtype=np.uint8),
                          (size + n_frames, size), interpolation=cv2.INTER_CUBIC)
        folder = root / f"clip_{c}"
        folder.mkdir(parents=True)
        for t in range(n_frames):
            cv2.imwrite(str(folder / f"{t:04d}.png"), base[:, t:t + size][:, :, ::-1])
    return root


def dataset(root, **kw):
    data = {"root": str(root), "clip_length": 3, "gt_size": 64, "hflip_prob": 0.0,
            "degradation": {"upsample": False}}
    data.update(kw)
    return VideoClipDataset(from_dict(ClipDatasetConfig, data))


@pytest.mark.parametrize("length", [1, 2, 5, 7])
def test_window_any_length_equally_spaced_inside(length):
    rng = np.random.default_rng(0)
    for _ in range(50):
        w = sample_window(20, length, [1, 2, 3], rng, reverse_prob=0.5)
        assert len(w) == length and all(0 <= i < 20 for i in w)
        steps = {b - a for a, b in zip(w, w[1:])}
        assert len(steps) <= 1 and steps <= {1, 2, 3, -1, -2, -3}


def test_window_too_short_clip_is_an_error_naming_it():
    with pytest.raises(ValueError, match="clipA has 4 frames"):
        sample_window(4, 5, [1, 2], np.random.default_rng(0), name="clipA")


def test_sampler_is_a_function_of_step_and_rank():
    full = StepSampler(10, batch_size=2, seed=3)
    it = iter(full)
    first = [next(it) for _ in range(2 * 7)]  # steps 0..6
    resumed = iter(StepSampler(10, batch_size=2, seed=3, start_step=4))
    assert [next(resumed) for _ in range(6)] == first[8:14]
    # two ranks split every global batch without overlap and cover an epoch exactly once
    r0, r1 = iter(StepSampler(10, 1, 3, rank=0, world_size=2)), iter(StepSampler(10, 1, 3, rank=1, world_size=2))
    keys = [k for _ in range(5) for k in (next(r0), next(r1))]
    assert sorted(i for _, i in keys) == list(range(10)) and {e for e, _ in keys} == {0}


def test_dataset_shapes_ranges_and_determinism(tmp_path):
    ds = dataset(make_clips(tmp_path / "clips"), repeat=2)
    assert len(ds) == 4
    a, b = ds[(0, 1)], ds[(0, 1)]
    assert a["gt"].shape == (3, 3, 64, 64) and a["lq"].shape == (3, 3, 16, 16)
    for x in (a["gt"], a["lq"]):
        assert x.dtype == torch.float32 and -1.0 <= x.min() and x.max() <= 1.0
    assert torch.equal(a["lq"], b["lq"]) and torch.equal(a["gt"], b["gt"])  # same key, same sample
    c = ds[(1, 1)]  # another epoch: another draw of the degradation
    assert not torch.equal(a["lq"], c["lq"])


def test_flip_is_applied_to_the_aligned_crops(tmp_path):
    root = make_clips(tmp_path / "clips", n_clips=1)
    plain, flipped = dataset(root, hflip_prob=0.0)[(0, 0)], dataset(root, hflip_prob=1.0)[(0, 0)]
    assert torch.equal(flipped["gt"], plain["gt"].flip(-1))


def _lq_psnr(root, **deg):
    """Mean PSNR of the bilinearly upsampled LQ clip against its GT over a few samples."""
    ds = dataset(root, degradation={"upsample": True, **deg})
    values = []
    for i in range(len(ds)):
        s = ds[(0, i)]
        values += [psnr(p, g) for p, g in zip(to_uint8(s["lq"]), to_uint8(s["gt"]))]
    return float(np.mean(values))


def test_degradation_is_measurable(tmp_path):
    root = make_clips(tmp_path / "clips", n_frames=4, detail=16)
    mild = dict(blur_sigma=[1, 1], noise_sigma=[0, 0], crf=[18, 18])
    base = _lq_psnr(root, **mild)
    assert _lq_psnr(root, **{**mild, "crf": [45, 45]}) < base - 0.5
    assert _lq_psnr(root, **{**mild, "blur_sigma": [6, 6]}) < base - 0.5
    assert _lq_psnr(root, **{**mild, "noise_sigma": [25, 25]}) < base - 0.5


def test_bad_inputs_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        dataset(tmp_path / "nowhere")
    root = make_clips(tmp_path / "clips", n_clips=1)
    with pytest.raises(ValueError, match="expected aligned 128x128"):
        dataset(root, gt_size=128)[(0, 0)]
    with pytest.raises(ValueError, match="must be even"):
        dataset(root, gt_size=36)


@pytest.mark.skipif(not (SHARED / "videos" / "real_1.mp4").is_file(), reason="../shared/videos is not here")
def test_videos_are_clips_too():
    ds = dataset(SHARED / "videos", clips=["real_1"], resize=True, clip_length=2)
    s = ds[(0, 0)]
    assert s["gt"].shape == (2, 3, 64, 64) and s["key"].startswith("real_1/")


def test_landmarks_align_frames_like_restoration_then_flip(tmp_path):
    from keep.face.align import FFHQ_TEMPLATE_512
    crops = make_clips(tmp_path / "crops", n_clips=1, n_frames=4, detail=8)
    # place each 64-px aligned crop into a 128-px frame by a known similarity (scale 1.5, shift)
    to_frame = np.array([[1.5, 0.0, 20.0], [0.0, 1.5, 12.0]])
    frames_dir, marks = tmp_path / "frames" / "clip_0", tmp_path / "landmarks"
    frames_dir.mkdir(parents=True)
    marks.mkdir()
    template_64 = (FFHQ_TEMPLATE_512 + 0.5) * 64 / 512 - 0.5  # pixel-centre convention of crop_matrix
    points = template_64 @ to_frame[:, :2].T + to_frame[:, 2]
    lines = []
    for i, f in enumerate(sorted((crops / "clip_0").iterdir())):
        frame = cv2.warpAffine(cv2.imread(str(f)), to_frame, (128, 128), flags=cv2.INTER_CUBIC)
        cv2.imwrite(str(frames_dir / f.name), frame)
        lines.append(f.name + " " + " ".join(f"{v:.4f}" for v in points.ravel()))
    (marks / "clip_0.txt").write_text("\n".join(lines))
    aligned = dataset(tmp_path / "frames", landmarks=str(marks), clip_length=4, align="before_degradation")[(0, 0)]["gt"]
    reference = dataset(crops, clip_length=4)[(0, 0)]["gt"]
    inner = (slice(None), slice(None), slice(4, -4), slice(4, -4))
    values = [psnr(p, g) for p, g in zip(to_uint8(aligned[inner]), to_uint8(reference[inner]))]
    assert min(values) > 30, values  # the crops come back (two resamplings apart)
    flipped = dataset(tmp_path / "frames", landmarks=str(marks), clip_length=4, hflip_prob=1.0,
                      align="before_degradation")[(0, 0)]["gt"]
    assert torch.equal(flipped, aligned.flip(-1))  # the flip acts on the aligned crop
    (marks / "clip_0.txt").write_text("\n".join(lines[:2]))
    with pytest.raises(ValueError, match="2 lines .* clip of 4 frames"):
        dataset(tmp_path / "frames", landmarks=str(marks), clip_length=2)[(0, 0)]
