"""`keep degrade` and `keep eval` end to end on tiny clips, offline."""
from __future__ import annotations

import csv
import json
import socket
from pathlib import Path

import cv2
import numpy as np
import pytest

from keep.cli import main as keep_main
from keep.data.degradation import DegradationParams, degrade_clip
from keep.evaluation.clips import write_frames
from keep.io import read_frames
from keep.evaluation.levels import TABLE_A1, clip_seed, level_config
from keep.metrics.psnr_ssim import psnr, ssim

from shared_material import SHARED, require


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Every test here must work on a machine without network."""
    def refuse(*args, **kwargs):
        raise OSError("network access attempted in an offline test")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture(scope="module")
def frames():
    video = require(SHARED / "videos" / "synthetic_1.mp4")
    return read_frames(video, max_frames=4)   # (4, 128, 128, 3) aligned faces


def _read_csv(path: Path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _write_video(frames: np.ndarray, path: Path) -> None:
    import av
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=20, options={"crf": "0"})
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv444p"
        for f in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        container.mux(stream.encode(None))


def test_eval_contract_psnr_ssim(tmp_path, frames, capsys):
    gt_root, pred_root, out = tmp_path / "gt", tmp_path / "pred", tmp_path / "out"
    preds = {}
    for i, name in enumerate(["clip_a", "clip_b"]):
        gt = np.roll(frames, i, axis=0)
        pred = np.clip(gt.astype(int) + (i + 1) * 3, 0, 255).astype(np.uint8)
        write_frames(gt, gt_root / name)
        write_frames(pred, pred_root / name)
        preds[name] = (pred, gt)
    rc = keep_main(["eval", "--pred", str(pred_root), "--gt", str(gt_root), "-o", str(out), "--metrics", "psnr,ssim"])
    assert rc == 0
    rows = _read_csv(out / "per_clip.csv")
    assert list(rows[0].keys()) == ["clip", "psnr", "ssim"]
    assert [r["clip"] for r in rows] == ["clip_a", "clip_b"]
    for row in rows:
        pred, gt = preds[row["clip"]]
        assert float(row["psnr"]) == pytest.approx(np.mean([psnr(p, g) for p, g in zip(pred, gt)]), abs=1e-5)
        assert float(row["ssim"]) == pytest.approx(np.mean([ssim(p, g) for p, g in zip(pred, gt)]), abs=1e-5)
    per_frame = _read_csv(out / "per_frame.csv")
    assert len(per_frame) == 8 and list(per_frame[0].keys()) == ["clip", "frame", "psnr", "ssim"]
    summary = (out / "summary.md").read_text()
    assert "| Method | PSNR↑ | SSIM↑ |" in summary and "| pred |" in summary
    mean_psnr = np.mean([float(r["psnr"]) for r in rows])
    assert f"{mean_psnr:.4f}" in summary and f"{mean_psnr:.4f}" in capsys.readouterr().out


def test_eval_videos_several_methods_unavailable_metric_and_plots(tmp_path, frames, monkeypatch):
    monkeypatch.setenv("KEEP_WEIGHTS_DIR", str(tmp_path / "no_weights"))   # no ArcFace / GMFlow files
    gt_root = tmp_path / "gt"
    write_frames(frames, gt_root / "clip_a")
    exact, small = tmp_path / "exact", tmp_path / "small"
    exact.mkdir()
    _write_video(frames, exact / "clip_a.mp4")           # a video prediction against a frame-folder GT
    lq = np.stack([cv2.resize(f, (32, 32), interpolation=cv2.INTER_AREA) for f in frames])
    write_frames(lq, small / "clip_a")                   # another size: resized to the GT (bicubic)
    out = tmp_path / "out"
    rc = keep_main(["eval", "--pred", str(exact), str(small), "--gt", str(gt_root), "-o", str(out),
                    "--metrics", "psnr,lpips,ids,sigma_ids,flicker", "--ids-backend", "dlib",
                    "--plot-clips", "clip_a"])
    assert rc == 0
    rows = _read_csv(out / "per_clip.csv")
    assert list(rows[0].keys()) == ["method", "clip", "psnr", "lpips_alex", "ids_dlib", "sigma_ids_dlib", "ewarp_farneback"]
    by_method = {r["method"]: r for r in rows}
    assert float(by_method["exact"]["psnr"]) > 45 > float(by_method["small"]["psnr"])   # crf 0 yuv444: near lossless
    assert float(by_method["exact"]["ids_dlib"]) > float(by_method["small"]["ids_dlib"])
    summary = (out / "summary.md").read_text()
    assert "| exact |" in summary and "| small |" in summary and "IDS↑†" in summary and "offline substitute" in summary
    info = json.loads((out / "metrics.json").read_text())
    from keep.metrics.lpips_metric import backbone_file
    if not backbone_file("alex")[1].is_file():
        assert "lpips" in info["unavailable"] and "alexnet" in info["unavailable"]["lpips"]
        assert "n/a" in summary and rows[0]["lpips_alex"] == ""
    for plot in ("clip_a_identity.png", "clip_a_slice.png"):
        assert (out / "plots" / plot).stat().st_size > 1000


def test_eval_errors_are_clear(tmp_path, frames, capsys):
    gt_root, pred_root = tmp_path / "gt", tmp_path / "pred"
    write_frames(frames, gt_root / "clip_a")
    write_frames(frames, gt_root / "clip_b")
    write_frames(frames[:3], pred_root / "clip_a")
    write_frames(frames, pred_root / "clip_b")
    args = ["eval", "--pred", str(pred_root), "--gt", str(gt_root), "-o", str(tmp_path / "out"), "--metrics", "psnr"]
    assert keep_main(args) == 2
    assert "3 restored frames but 4 GT frames" in capsys.readouterr().err
    write_frames(frames, pred_root / "clip_a")
    (gt_root / "clip_c").mkdir()
    write_frames(frames, gt_root / "clip_c")
    assert keep_main(args) == 2
    assert "no prediction for GT clip(s) clip_c" in capsys.readouterr().err
    assert keep_main(args[:-1] + ["psnr,sharpness"]) == 2
    assert "unknown metric" in capsys.readouterr().err


def test_degrade_cli_deterministic_resumable_and_recorded(tmp_path, frames):
    gt_root = tmp_path / "gt"
    big = np.stack([cv2.resize(f, (256, 256), interpolation=cv2.INTER_CUBIC) for f in frames[:3]])
    write_frames(big, gt_root / "clip_a")
    write_frames(big[::-1].copy(), gt_root / "clip_b")
    out1, out2 = tmp_path / "lq1", tmp_path / "lq2"
    for out in (out1, out2):
        assert keep_main(["degrade", "--gt", str(gt_root), "--level", "medium", "-o", str(out), "--seed", "3"]) == 0
    for clip in ("clip_a", "clip_b"):
        files1 = sorted((out1 / clip).glob("*.png"))   # beside them: the .keep-output marker
        assert [f.name for f in files1] == ["00000000.png", "00000001.png", "00000002.png"]
        assert all(f.read_bytes() == (out2 / clip / f.name).read_bytes() for f in files1)   # same seed, same bytes
        assert read_frames(out1 / clip).shape == (3, 64, 64, 3)                                 # x4 down
        record = json.loads((out1 / f"{clip}.json").read_text())
        params = record["params"]
        lo_hi = TABLE_A1["medium"]
        assert lo_hi["crf"][0] <= params["crf"] <= lo_hi["crf"][1]
        assert lo_hi["blur_sigma"][0] <= params["blur_sigma"] <= lo_hi["blur_sigma"][1]
        if params["noise_sigma"] is not None:   # the release protocol (default) draws δ per frame: None
            assert lo_hi["noise_sigma"][0] <= params["noise_sigma"] <= lo_hi["noise_sigma"][1]
        assert record["clip_seed"] == clip_seed("medium", clip, 3) and record["level"] == "medium"
        # the record alone regenerates the clip with the library
        again = degrade_clip(read_frames(gt_root / clip), DegradationParams(**params), level_config("medium"))
        np.testing.assert_array_equal(again, read_frames(out1 / clip))
    # resumable: a finished clip is not rewritten; a clip without its JSON is redone
    stamp = (out1 / "clip_a" / "00000000.png").stat().st_mtime_ns
    (out1 / "clip_b.json").unlink()
    assert keep_main(["degrade", "--gt", str(gt_root), "--level", "medium", "-o", str(out1), "--seed", "3"]) == 0
    assert (out1 / "clip_a" / "00000000.png").stat().st_mtime_ns == stamp
    assert (out1 / "clip_b.json").is_file()
    # a different base seed gives different clips
    out3 = tmp_path / "lq3"
    assert keep_main(["degrade", "--gt", str(gt_root), "--level", "medium", "-o", str(out3), "--seed", "4"]) == 0
    assert not np.array_equal(read_frames(out3 / "clip_a"), read_frames(out1 / "clip_a"))


def test_restore_save_faces_folders_are_read_instead_of_their_videos(tmp_path, frames):
    """`keep restore --aligned --save-faces` leaves <clip>.mp4 and <clip>/restored_faces/*.png:
    eval must read the lossless PNGs (a marked video of the same name must not be used)."""
    from keep.evaluation.clips import list_clips
    gt_root, pred_root, out = tmp_path / "gt", tmp_path / "pred", tmp_path / "out"
    write_frames(frames, gt_root / "clip_a")
    write_frames(frames, pred_root / "clip_a" / "restored_faces")
    _write_video(255 - frames, pred_root / "clip_a.mp4")  # far from the GT: must be ignored
    assert list_clips(pred_root) == {"clip_a": pred_root / "clip_a" / "restored_faces"}
    assert keep_main(["eval", "--pred", str(pred_root), "--gt", str(gt_root), "-o", str(out),
                      "--metrics", "psnr"]) == 0
    assert _read_csv(out / "per_clip.csv")[0]["psnr"] == "inf"


def _refuse_constant(name):
    raise ValueError(f"non-strict JSON constant {name}")


def test_boundary_report_on_known_flicker_and_strict_json(tmp_path):
    """A still GT (zero motion by definition) and a prediction whose brightness jumps at every
    window boundary and alternates by 1 level inside: the report's means equal a hand computation
    of Eq. 8; metrics.json parses with NaN/Infinity refused (an identical clip gives PSNR inf -> null)."""
    window, t_len = 10, 45
    still = np.random.default_rng(5).integers(40, 200, (1, 32, 32, 3), dtype=np.uint8)
    gt = np.repeat(still, t_len, axis=0)
    offsets = np.array([2 + 4 * (t // window) + (t % 2) for t in range(t_len)])
    pred = (gt.astype(int) + offsets[:, None, None, None]).astype(np.uint8)
    write_frames(gt, tmp_path / "gt" / "clip_a")
    write_frames(pred, tmp_path / "pred" / "clip_a")
    write_frames(gt, tmp_path / "gt" / "clip_b")
    write_frames(gt, tmp_path / "pred" / "clip_b")        # identical: PSNR inf, E_warp 0
    out = tmp_path / "out"
    assert keep_main(["eval", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt"), "-o", str(out),
                      "--metrics", "psnr,flicker", "--flow", "farneback", "--window", str(window)]) == 0
    info = json.loads((out / "metrics.json").read_text(), parse_constant=_refuse_constant)
    e = {t: 3 * ((offsets[t] - offsets[t - 1]) / 255) ** 2 for t in range(1, t_len)}
    at = [e[t] for t in range(1, t_len) if t % window == 0] + [0.0] * 4            # clip_b: 4 boundaries, 0
    inside = [e[t] for t in range(1, t_len) if t % window] + [0.0] * (t_len - 1 - 4)
    stats = info["window_boundaries"]["report"]["pred"]["ewarp_farneback"]
    assert stats["n_boundary"] == 8 and stats["boundary"] == pytest.approx(np.mean(at), rel=1e-6)
    assert stats["inside"] == pytest.approx(np.mean(inside), rel=1e-6) and stats["ratio"] > 3
    assert info["summary"]["pred"]["psnr"] is None and "summary.pred.psnr" in info["null_values"]
    assert "Window boundaries" in (out / "summary.md").read_text()
    assert (out / "plots" / "per_frame_mean.png").stat().st_size > 1000
    # a second run needs --overwrite, and replaces the outputs (no stale plots)
    (out / "plots" / "stale.png").write_bytes(b"x")
    args = ["eval", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt"), "-o", str(out), "--metrics", "psnr"]
    assert keep_main(args) == 2
    assert keep_main(args + ["--overwrite"]) == 0
    assert not (out / "plots" / "stale.png").exists()
