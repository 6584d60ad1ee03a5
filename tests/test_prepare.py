"""Data preparation: VFHQ annotations, `keep prepare-vfhq` (degrade, then align as the release's test
loader), DicFace's VFHQ-Test-50 reader, and `keep prepare` (in-the-wild videos -> training layout)."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from scipy.ndimage import gaussian_filter1d

from keep.cli import main as keep_main
from keep.config import from_dict
from keep.data.degradation import DegradationConfig, DegradationParams, degrade_clip
from keep.data.vfhq import list_dicface_clips, list_vfhq_clips, read_annotation, write_annotation
from keep.evaluation.clips import write_frames
from keep.face.align import FFHQ_TEMPLATE_512, align_matrix, crop_matrix, warp_face
from keep.io import read_frames

from shared_material import VIDEOS, require

BORDER = (132, 133, 135)   # the release's (135, 133, 132) BGR


@pytest.fixture(scope="module")
def dlib_detector():
    pytest.importorskip("dlib")
    from keep.face.detect import DlibDetector
    return DlibDetector()


@pytest.fixture(scope="module")
def vfhq_frames(dlib_detector):
    """Six unaligned frames of real_1 cropped to 384x512 (LQ 96x128: even for H.264) and their dlib landmarks."""
    frames = read_frames(require(VIDEOS / "real_1.mp4"), max_frames=6)[:, :, 2:386]
    landmarks = []
    for f in frames:
        found = dlib_detector.detect(f)
        assert found, "dlib found no face in real_1"
        landmarks.append(found[0].landmarks)
    return np.ascontiguousarray(frames), np.stack(landmarks)


def _vfhq_tree(root, frames, landmarks, name="Clip+_HebIzK_LP4+P2+C1+F16589-16715"):
    write_frames(frames, root / "frames" / name)
    header = {"Video ID": "_HebIzK_LP4", "H": "512", "W": "384", "FPS": "25", "CROP": "0 0 384 512"}
    write_annotation(root / "annotations" / f"{name}.txt", [f"{i:08d}.png" for i in range(len(frames))],
                     landmarks, header)
    return name


def _release_lq_warp(lq, landmarks):
    """The release's align_warp_face for the LQ frame, written out: fit to landmarks / 4 and template / 4."""
    m = cv2.estimateAffinePartial2D(landmarks / 4.0, FFHQ_TEMPLATE_512 / 4.0, method=cv2.LMEDS)[0]
    return cv2.warpAffine(lq, m, (128, 128), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=BORDER)


def test_annotation_format_round_trip_and_errors(tmp_path):
    points = np.arange(30, dtype=np.float64).reshape(3, 5, 2) + 0.25
    path = tmp_path / "clip.txt"
    write_annotation(path, ["00000000.png", "00000001.png", "00000002.png"], points, {"FPS": "25", "CROP": "1 2 3 4"})
    note = read_annotation(path)
    assert note.header == {"FPS": "25", "CROP": "1 2 3 4"} and note.names[1] == "00000001.png"
    np.testing.assert_allclose(note.landmarks, points, atol=1e-3)
    # frames matched by name (extension or not), any line order
    path.write_text("FPS: 25\n00000001 " + " ".join(["1"] * 10) + "\n00000000 " + " ".join(["0"] * 10) + "\n")
    frames = tmp_path / "clip"
    write_frames(np.zeros((2, 8, 8, 3), np.uint8), frames)
    (tmp_path / "notes").mkdir()
    path.rename(tmp_path / "notes" / "clip.txt")
    clip = list_vfhq_clips(tmp_path, tmp_path / "notes", ["clip"])[0]
    assert clip.landmarks[:, 0, 0].tolist() == [0.0, 1.0] and clip.header == {"FPS": "25"}
    (tmp_path / "notes" / "clip.txt").write_text("00000001 " + " ".join(["1"] * 10) + "\n")
    with pytest.raises(ValueError, match="no landmark line for frame"):
        list_vfhq_clips(tmp_path, tmp_path / "notes", ["clip"])
    (tmp_path / "notes" / "clip.txt").write_text("H: 512\nW: 384\n")
    with pytest.raises(ValueError, match="no landmark lines"):
        list_vfhq_clips(tmp_path, tmp_path / "notes", ["clip"])


def test_prepare_vfhq_degrades_then_aligns_like_the_release(tmp_path, vfhq_frames, capsys):
    frames, landmarks = vfhq_frames
    name = _vfhq_tree(tmp_path, frames, landmarks)
    out = tmp_path / "out"
    args = ["prepare-vfhq", "--frames", str(tmp_path / "frames"), "--annotations", str(tmp_path / "annotations"),
            "-o", str(out), "--level", "medium"]
    assert keep_main(args) == 0
    gt, lq = read_frames(out / "GT" / name), read_frames(out / "LQ" / name)
    assert gt.shape == (6, 512, 512, 3) and lq.shape == (6, 128, 128, 3)
    record = json.loads((out / "LQ" / f"{name}.json").read_text())
    assert record["protocol"] == "release" and record["codec_fps"] == 1 and record["level"] == "medium"
    landmarks = read_annotation(tmp_path / "annotations" / f"{name}.txt").landmarks   # as written (3 decimals)
    # aligned GT = a direct warp of the unaligned frame with the same (unsmoothed) landmarks
    for t in range(6):
        np.testing.assert_array_equal(gt[t], warp_face(frames[t], align_matrix(landmarks[t]), 512))
    # aligned LQ = the unaligned clip degraded as one video (from its record), then warped with landmarks / 4
    unaligned = degrade_clip(frames, DegradationParams(**record["params"]), from_dict(DegradationConfig, record["config"]))
    assert unaligned.shape == (6, 128, 96, 3)
    for t in range(6):
        np.testing.assert_array_equal(lq[t], _release_lq_warp(unaligned[t], landmarks[t]))
    # resumable with the same settings, refused with others, nothing overwritten
    stamp = (out / "GT" / name / "00000000.png").stat().st_mtime_ns
    assert keep_main(args) == 0
    capsys.readouterr()
    assert keep_main(args[:-1] + ["heavy"]) == 2
    assert "made with other settings" in capsys.readouterr().err
    assert (out / "GT" / name / "00000000.png").stat().st_mtime_ns == stamp
    # landmarks in another coordinate system (e.g. the source video's) are refused, not warped
    write_annotation(tmp_path / "annotations" / f"{name}.txt", [f"{i:08d}.png" for i in range(6)], landmarks + 900)
    assert keep_main(args[:5] + ["-o", str(tmp_path / "out2"), "--level", "mild"]) == 2
    assert "outside the 384x512 frames" in capsys.readouterr().err


def test_dicface_vfhq_test_50_reader_and_alignment(tmp_path, vfhq_frames):
    frames, landmarks = vfhq_frames
    name = "Clip+_HebIzK_LP4+P2+C1+F16589-16715"
    root = tmp_path / "test_data"
    write_frames(frames, root / "TEST_DATA" / name)
    small = np.stack([cv2.resize(f, (96, 128), interpolation=cv2.INTER_AREA) for f in frames])
    write_frames(small, root / "LR_Blind" / name)
    (root / "vfhq_test_landmarks").mkdir(parents=True)
    (root / "vfhq_test_landmarks" / f"{name}.txt").write_text(
        "".join(" ".join(f"{v:.4f}" for v in lm.ravel()) + "\n" for lm in landmarks))
    clips = list_dicface_clips(root)
    assert [c.name for c in clips] == [name] and len(clips[0].gt) == 6
    np.testing.assert_allclose(clips[0].landmarks, landmarks, atol=1e-4)
    out = tmp_path / "out"
    assert keep_main(["prepare-vfhq", "--dicface", str(root), "-o", str(out)]) == 0
    gt, lq = read_frames(out / "GT" / name), read_frames(out / "LQ" / name)
    pts = clips[0].landmarks
    for t in range(6):
        np.testing.assert_array_equal(gt[t], warp_face(frames[t], align_matrix(pts[t]), 512))
        np.testing.assert_array_equal(lq[t], _release_lq_warp(small[t], pts[t]))
    with pytest.raises(FileNotFoundError, match="missing LR_Blind/, TEST_DATA/, vfhq_test_landmarks/"):
        list_dicface_clips(root / "TEST_DATA")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, dlib_detector):
    """`keep prepare` on the two in-the-wild clips (first 24 frames, 128-px crops), real_2 held out."""
    src = tmp_path_factory.mktemp("videos")
    for n in ("real_1", "real_2"):
        (src / f"{n}.mp4").symlink_to(require(VIDEOS / f"{n}.mp4"))
    out = tmp_path_factory.mktemp("prepared") / "data"
    args = ["prepare", str(src), "-o", str(out), "--detector", "dlib", "--max-frames", "24", "--size", "128",
            "--min-frames", "8", "--val", "real_2"]
    assert keep_main(args) == 0
    return src, out, args


def test_prepare_writes_the_training_layout_with_the_restore_alignment(prepared, dlib_detector):
    src, out, _ = prepared
    assert sorted(p.name for p in (out / "train").iterdir()) == ["real_1_s000_t000"]
    assert sorted(p.name for p in (out / "val").iterdir()) == ["real_2_s000_t000"]
    record = json.loads((out / "meta" / "real_1.json").read_text())
    assert record["split"] == "train" and record["frames"] == 24 and record["shots"] == 1 and not record["rejected"]
    crops = read_frames(out / "train" / "real_1_s000_t000")
    assert crops.shape == (24, 128, 128, 3)
    # independent: dlib on every frame, scipy's Gaussian smoothing (sigma 5, reflect), the template warp
    frames = read_frames(src / "real_1.mp4", max_frames=24)
    raw = np.stack([dlib_detector.detect(f)[0].landmarks for f in frames]).reshape(24, 10)
    smooth = gaussian_filter1d(raw, 5, axis=0, mode="reflect").reshape(24, 5, 2)
    for t in (0, 11, 23):
        expected = warp_face(frames[t], crop_matrix(align_matrix(smooth[t]), 128), 128)
        assert np.abs(expected.astype(int) - crops[t].astype(int)).max() <= 1
    note = read_annotation(out / "crop_landmarks" / "real_1_s000_t000.txt")
    assert note.landmarks.shape == (24, 5, 2)
    assert np.abs(note.landmarks.mean(0) - (FFHQ_TEMPLATE_512 / 4 - 0.375)).max() < 12   # near the template
    # the training dataset reads the layout as it is
    from keep.data.dataset import ClipDatasetConfig, VideoClipDataset
    ds = VideoClipDataset(from_dict(ClipDatasetConfig, {"root": str(out / "train"), "gt_size": 128, "clip_length": 4,
                                                        "degradation": {"upsample": False}}))
    sample = ds[(0, 0)]
    assert tuple(sample["gt"].shape) == (4, 3, 128, 128) and tuple(sample["lq"].shape) == (4, 3, 32, 32)


def test_prepare_resumes_refuses_and_filters(prepared, tmp_path, capsys):
    src, out, args = prepared
    stamp = (out / "meta" / "real_1.json").stat().st_mtime_ns
    assert keep_main(args) == 0                                       # done: skipped
    assert (out / "meta" / "real_1.json").stat().st_mtime_ns == stamp
    capsys.readouterr()
    assert keep_main(args + ["--sigma", "2"]) == 2                    # other settings: refused, untouched
    assert "prepared with other settings" in capsys.readouterr().err
    # filters: a blurred copy is rejected for sharpness, a high min-face rejects everything
    frames = read_frames(src / "real_1.mp4", max_frames=12)
    blurred = tmp_path / "blurred"
    write_frames(np.stack([cv2.GaussianBlur(f, (0, 0), 4) for f in frames]), blurred / "blurry")
    write_frames(frames, blurred / "sharp")
    out2 = tmp_path / "out2"
    assert keep_main(["prepare", str(blurred), "-o", str(out2), "--detector", "dlib", "--size", "128",
                      "--min-frames", "8", "--val-fraction", "0"]) == 0
    assert [p.name for p in (out2 / "train").iterdir()] == ["sharp_s000_t000"]
    rejected = json.loads((out2 / "meta" / "blurry.json").read_text())["rejected"]
    assert len(rejected) == 1 and "sharpness" in rejected[0]["reasons"][0]
    out3 = tmp_path / "out3"
    assert keep_main(["prepare", str(blurred / "sharp"), "-o", str(out3), "--detector", "dlib", "--size", "128",
                      "--min-frames", "8", "--min-face", "1000"]) == 1   # no segment kept: an error
    assert "face covers" in json.loads((out3 / "meta" / "sharp.json").read_text())["rejected"][0]["reasons"][0]
    assert not (out3 / "train").exists() or not any((out3 / "train").iterdir())


def test_prepare_splits_at_shot_cuts(tmp_path, dlib_detector):
    """Two shots (real_1 then real_2 in one frame folder): two segments, none spanning the cut."""
    a = read_frames(require(VIDEOS / "real_1.mp4"), max_frames=10)[:, :, :362]
    b = read_frames(require(VIDEOS / "real_2.mp4"), max_frames=10)
    write_frames(np.concatenate([a, b]), tmp_path / "in" / "twoshots")
    out = tmp_path / "out"
    assert keep_main(["prepare", str(tmp_path / "in" / "twoshots"), "-o", str(out), "--detector", "dlib",
                      "--size", "64", "--min-frames", "5", "--min-face", "0", "--val-fraction", "0"]) == 0
    record = json.loads((out / "meta" / "twoshots.json").read_text())
    assert record["shots"] == 2
    kept = sorted((s["shot"], s["start"], s["frames"]) for s in record["kept"])
    assert kept == [(0, 0, 10), (1, 10, 10)]
