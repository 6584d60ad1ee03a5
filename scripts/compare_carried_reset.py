"""Carried vs reset Kalman state on long clips: per-frame flicker (Lai et al.'s E_warp) and the
window-boundary report for both modes, plus how far the two outputs drift apart.

    python scripts/compare_carried_reset.py -o runs/carried_vs_reset [--weights keep-v0.1] [--frames 300]

Input: aligned clips given with --clip (e.g. 128x128 degraded face crops) looped forth and back to
``--frames`` frames (or ``--clip`` files). Without ``--weights`` it runs the tiny network at 128 px with
seeded random weights: that checks the harness, not the question; only real weights can show whether
carrying the state (our `keep restore` default) is at least as good as the release's reset.
There is no GT here, so the flicker's motion comes from the bicubic x4 input (Farneback flow).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from keep.evaluation.boundary import boundary_markdown, boundary_report  # noqa: E402
from keep.evaluation.plots import plot_per_frame  # noqa: E402
from keep.io import read_frames  # noqa: E402
from keep.metrics.flicker import farneback_flow, warping_errors  # noqa: E402
from keep.restore.restorer import FaceRestorer  # noqa: E402


def long_clip(path: Path, frames: int) -> np.ndarray:
    clip = read_frames(path)
    loop = np.concatenate([clip, clip[::-1][1:-1]]) if len(clip) > 2 else clip   # forth and back: no jump
    return np.concatenate([loop] * (frames // len(loop) + 1))[:frames]


def restore(net, clip: np.ndarray, window: int, reset: bool) -> np.ndarray:
    restorer = FaceRestorer(net, torch.device("cpu"), reset_state=reset)
    out = []
    for start in range(0, len(clip), window):
        out += restorer.restore(0, list(clip[start:start + window]))
    return np.stack(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("--clip", type=Path, nargs="+", required=True,
                        help="aligned face clips, e.g. 128x128 degraded crops (the tests use the shared synthetic_*.mp4)")
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--window", type=int, default=20)
    parser.add_argument("--weights", default=None, help="registry name or file (default: tiny network, random)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    clips = args.clip
    if args.weights:
        from keep.api import load_model
        net = load_model(args.weights)
    else:
        from keep.api import create_model
        torch.manual_seed(0)
        net = create_model("keep-tiny", img_size=128)
    size = int(net.img_size)
    args.output.mkdir(parents=True, exist_ok=True)
    curves = {"carried": {}, "reset": {}}
    per_clip = {"carried": {"ewarp_farneback": []}, "reset": {"ewarp_farneback": []}}
    drift = {}
    for path in clips:
        lq = long_clip(path, args.frames)
        faces = np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_CUBIC) for f in lq])
        outputs = {mode: restore(net, faces, args.window, mode == "reset") for mode in ("carried", "reset")}
        for mode, out in outputs.items():
            ewarp = warping_errors(out, faces, farneback_flow)
            per_clip[mode]["ewarp_farneback"].append(ewarp)
            curves[mode][f"{path.stem} ewarp"] = ewarp
        diff = np.mean(np.abs(outputs["carried"].astype(float) - outputs["reset"].astype(float)), axis=(1, 2, 3))
        drift[path.stem] = float(diff.mean())
    report = boundary_report(per_clip, args.window)
    plot_per_frame({m: {"ewarp_farneback": np.nanmean(np.stack(v["ewarp_farneback"]), 0)} for m, v in per_clip.items()},
                   args.output / "carried_vs_reset.png", "E_warp per frame, carried vs reset", args.window)
    text = (f"network: {args.weights or 'keep-tiny at 128 px, random weights (harness check only)'}; "
            f"frames {args.frames}, window {args.window}\n\n" + boundary_markdown(report, args.window)
            + "\nmean |carried - reset| per clip (0-255): " + json.dumps(drift) + "\n")
    (args.output / "summary.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
