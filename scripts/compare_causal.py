"""Causal (live) vs window mode: PSNR against the GT and flicker (Lai et al.'s warping error) per frame.

    python scripts/compare_causal.py --clip face_crops.mp4 -o runs/causal [--weights W] [--level medium]

Each ``--clip`` is an aligned face clip taken as GT; it is degraded with a Table A1 level (release
protocol, seeded per clip, as ``keep degrade`` does), bicubic x4 to the network's size, and restored
twice with the same weights: in windows of ``--window`` frames with the state carried (``keep
restore``'s default, the gain's temporal attention over the window) and frame by frame with
``restore_frame`` (``keep live``: the gain sees the last ``causal_window`` frames only). Printed: mean
PSNR (RGB) and mean E_warp of both modes and of bicubic, and how far the two outputs are apart;
written: ``causal_vs_window.json`` and ``causal_vs_window.png`` (per-frame curves).

Without ``--weights`` the tiny network with seeded random weights runs: a check of the harness
only (random weights say nothing about quality). With a checkpoint trained by the tiny configs
(``keep train -c configs/tiny_stage2.yaml`` then ``--weights experiments/tiny_stage2/export.pth``) or
with real weights (``--weights keep-v1``) the figures mean something. The flicker's motion comes from
the GT (Farneback flow), as ``keep eval`` computes it without GMFlow weights.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from keep.data.degradation import degrade_clip, sample_params  # noqa: E402
from keep.evaluation.levels import clip_seed, level_config  # noqa: E402
from keep.io import read_frames  # noqa: E402
from keep.metrics.flicker import farneback_flow, warping_errors  # noqa: E402
from keep.metrics.psnr_ssim import psnr  # noqa: E402
from keep.restore.restorer import faces_to_tensor, tensor_to_faces  # noqa: E402


def degraded(gt: np.ndarray, level: str, name: str) -> np.ndarray:
    """The clip degraded to a Table A1 level (LQ at 1/4), then bicubic back to the GT size."""
    cfg = level_config(level, protocol="release")
    rng = np.random.default_rng(clip_seed(level, name))
    lq = degrade_clip(gt, sample_params(cfg, rng), cfg, rng)
    size = gt.shape[1]
    return np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_CUBIC) for f in lq])


@torch.inference_mode()
def restore_windows(net, frames: np.ndarray, window: int) -> np.ndarray:
    state, out = None, []
    for start in range(0, len(frames), window):
        y, state = net.restore_window(faces_to_tensor(list(frames[start:start + window]), torch.device("cpu")),
                                      state, causal=False)
        out += tensor_to_faces(y)
    return np.stack(out)


@torch.inference_mode()
def restore_causal(net, frames: np.ndarray) -> np.ndarray:
    state, out = None, []
    for frame in frames:
        y, state = net.restore_frame(faces_to_tensor([frame], torch.device("cpu"))[:, 0], state)
        out += tensor_to_faces(y[:, None])
    return np.stack(out)


def load_net(weights):
    if weights:
        from keep.api import load_model
        return load_model(weights).eval(), str(weights)
    from keep.api import create_model
    torch.manual_seed(0)
    return create_model("keep-tiny", img_size=128).eval(), "keep-tiny at 128 px, seeded random weights"


def plot(curves: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    for (clip, mode), values in curves.items():
        axes[0].plot(values["psnr"], label=f"{clip} {mode}")
        axes[1].plot(values["ewarp"], label=f"{clip} {mode}")
    axes[0].set_ylabel("PSNR (dB, RGB)")
    axes[1].set_ylabel("E_warp (frame t vs t-1)")
    axes[1].set_xlabel("frame")
    axes[0].legend(fontsize=7, ncol=2)
    axes[0].set_title("causal (frame by frame) vs window mode")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clip", type=Path, nargs="+", required=True, help="aligned face clips (the GT)")
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("--weights", default=None, help="checkpoint or registry name (default: tiny, random)")
    parser.add_argument("--level", choices=["mild", "medium", "heavy"], default="medium")
    parser.add_argument("--frames", type=int, default=40, help="first N frames of each clip")
    parser.add_argument("--window", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    net, label = load_net(args.weights)
    size = int(net.img_size)
    results, curves = {}, {}
    for path in args.clip:
        gt = read_frames(path)[:args.frames]
        gt = np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA) for f in gt])
        gt = gt[:, :size - size % 8, :size - size % 8]
        lq = degraded(gt, args.level, path.stem)
        outputs = {"bicubic": lq, "window": restore_windows(net, lq, args.window), "causal": restore_causal(net, lq)}
        clip_result = {}
        for mode, out in outputs.items():
            per_frame_psnr = [psnr(o, g) for o, g in zip(out, gt)]
            ewarp = warping_errors(out, gt, farneback_flow)
            clip_result[mode] = {"psnr": float(np.mean(per_frame_psnr)), "ewarp": float(np.nanmean(ewarp))}  # frame 0: no E_warp
            curves[(path.stem, mode)] = {"psnr": per_frame_psnr, "ewarp": list(map(float, ewarp))}
        apart = np.abs(outputs["causal"].astype(float) - outputs["window"].astype(float)).mean()
        clip_result["causal_vs_window_mean_abs"] = float(apart)
        results[path.stem] = clip_result
    args.output.mkdir(parents=True, exist_ok=True)
    summary = {"weights": label, "level": args.level, "window": args.window, "frames": args.frames,
               "causal_window": int(net.kalman_filter.window), "clips": results}
    fd, tmp = tempfile.mkstemp(dir=args.output, suffix=".tmp")
    with os.fdopen(fd, "w") as handle:
        json.dump(summary, handle, indent=1)
    os.replace(tmp, args.output / "causal_vs_window.json")
    plot(curves, args.output / "causal_vs_window.png")
    print(f"weights: {label}; level {args.level} (release protocol), {args.frames} frames, window {args.window}")
    print(f"{'clip':<14}{'mode':<9}{'PSNR dB':>9}{'E_warp':>10}")
    for clip, res in results.items():
        for mode in ("bicubic", "window", "causal"):
            print(f"{clip:<14}{mode:<9}{res[mode]['psnr']:>9.2f}{res[mode]['ewarp']:>10.4f}")
        print(f"{'':<14}causal vs window outputs: mean abs {res['causal_vs_window_mean_abs']:.2f} levels")
    print(f"written: {args.output / 'causal_vs_window.json'}, {args.output / 'causal_vs_window.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
