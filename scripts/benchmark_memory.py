"""Peak memory of `keep restore --all-faces` against the number of faces and the frame size.

A benchmark, not a test: each configuration runs in its own process (peak RSS is a process-lifetime
figure) and prints one row. Faces are made by tiling one face clip (frames of a video with one face)
on a canvas of fixed size, so the face count changes and nothing else does; the frame-size rows put
one face tile on 1080p and 4K canvases.

    python scripts/benchmark_memory.py VIDEO [--size 256] [--frames 3] [--faces 1 2 4 8] [--max-batch N]
    python scripts/benchmark_memory.py VIDEO --crops --window 20   # device crops of one 4K window

Figures: peak resident memory of the process (CPU), and on CUDA torch's peak allocated memory. A tiny
KEEP network with random weights (keep-tiny at --size px): what is measured is how the pipeline's
memory grows, not the real network's absolute figures (docs/restore.md, "Memory").
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

CANVAS = {"1080p": (1920, 1080), "4K": (3840, 2160)}


def _tiled_clip(video: Path, faces: int, canvas: str, frames: int, out: Path) -> Path:
    import cv2
    import numpy as np

    from keep.io.samples import write_sample_clip
    from keep.io.source import read_frames
    clip = read_frames(video, max_frames=frames)
    width, height = CANVAS[canvas]
    tile_h = height // 2                       # two rows of tiles at most (8 faces: 4 x 2)
    tile_w = int(round(clip.shape[2] * tile_h / clip.shape[1]))
    columns = max(1, (faces + 1) // 2)
    if columns * tile_w > width:
        raise SystemExit(f"{faces} tiles of {tile_w} px do not fit a {width} px canvas")
    images = []
    for frame in clip:
        tile = cv2.resize(frame, (tile_w, tile_h), interpolation=cv2.INTER_AREA)
        image = np.full((height, width, 3), 90, np.uint8)
        for k in range(faces):
            row, col = divmod(k, columns)
            image[row * tile_h:(row + 1) * tile_h, col * tile_w:(col + 1) * tile_w] = tile
        images.append(image)
    return write_sample_clip(images, out, tone_hz=None)


def _one(args) -> None:
    """Child process: one configuration, one JSON line on stdout."""
    import torch

    from keep.api import CONFIGS, create_model
    from keep.checkpoint import save_inference_checkpoint
    from keep.restore.options import RestoreOptions
    from keep.restore.pipeline import VideoRestorer
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        clip = _tiled_clip(Path(args.video), args.one_faces, args.one_canvas, args.frames, tmp / "clip.mp4")
        torch.manual_seed(0)
        net = create_model("keep-tiny", img_size=args.size)
        weights = save_inference_checkpoint(net, tmp / "tiny.pth", {"type": "KEEP", **CONFIGS["keep-tiny"],
                                                                     "img_size": args.size})
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        options = RestoreOptions(output_dir=tmp / "out", weights=str(weights), detector="dlib", all_faces=True,
                                 window=args.window, progress=False, mask="square", device=args.device,
                                 max_batch=args.max_batch)
        restorer = VideoRestorer(options)
        summary = restorer.run(clip)
        row = {"faces": args.one_faces, "canvas": args.one_canvas, "tracks": summary.tracks,
               "max_batch": restorer.restorer.max_batch,
               "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20,
               "rss_before_run_gib": base / 2 ** 20, "seconds": round(summary.seconds, 1)}
        if restorer.device.type == "cuda":
            row["cuda_peak_gib"] = torch.cuda.max_memory_allocated() / 2 ** 30
        print(json.dumps(row))


def _crops(args) -> None:
    """Child process: peak RSS of the device crops of one window of 4K frames (CPU tensors), by region
    (keep.restore.device_geometry.crop_faces) or, with --whole, by stacking whole frames as float32
    (the former way), one JSON line."""
    import numpy as np
    import torch

    from keep.restore import device_geometry
    width, height = CANVAS[args.one_canvas]
    frames = [torch.full((height, width, 3), 100, dtype=torch.uint8) for _ in range(args.window)]
    scale = 0.5
    matrix = np.array([[scale, 0, 256 - scale * width / 2], [0, scale, 256 - scale * height / 2]])
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if args.whole:
        x = torch.stack(frames).permute(0, 3, 1, 2).float()
        x = torch.cat([x, torch.ones_like(x[:, :1])], 1)
        device_geometry.warp_affine(x, [matrix] * len(frames), (512, 512))
    else:
        device_geometry.crop_faces(frames, [matrix] * len(frames), 512)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"canvas": args.one_canvas, "window": args.window, "whole_frames": bool(args.whole),
                      "face_px": int(512 / scale), "crop_peak_increase_gib": (peak - base) / 2 ** 20}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("video", help="a clip with one face")
    parser.add_argument("--size", type=int, default=256, help="network size of the tiny KEEP (default 256)")
    parser.add_argument("--frames", type=int, default=3)
    parser.add_argument("--window", type=int, default=3)
    parser.add_argument("--faces", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--max-batch", type=int, default=None, help="as keep restore (default: from free memory)")
    parser.add_argument("--one-faces", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--one-canvas", help=argparse.SUPPRESS)
    parser.add_argument("--crops", action="store_true", help="only the device crops of one window (4K, CPU tensors)")
    parser.add_argument("--whole", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one_faces is not None:
        _one(args)
        return
    if args.crops and args.one_canvas:
        _crops(args)
        return
    if args.crops:
        for whole in (True, False):
            command = [sys.executable, __file__, args.video, "--crops", "--one-canvas", "4K",
                       "--window", str(args.window)] + (["--whole"] if whole else [])
            print(subprocess.run(command, capture_output=True, text=True).stdout.strip(), flush=True)
        return
    configs = [(n, "1080p") for n in args.faces] + [(1, "4K")]
    print(f"keep-tiny at {args.size} px, {args.frames} frames, window {args.window}, device {args.device}")
    for faces, canvas in configs:
        command = [sys.executable, __file__, args.video, "--size", str(args.size), "--frames", str(args.frames),
                   "--window", str(args.window), "--device", args.device, "--one-faces", str(faces),
                   "--one-canvas", canvas]
        if args.max_batch:
            command += ["--max-batch", str(args.max_batch)]
        result = subprocess.run(command, capture_output=True, text=True, env=os.environ)
        lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
        print(lines[-1] if lines else f"{faces} faces {canvas}: failed\n{result.stderr[-2000:]}", flush=True)


if __name__ == "__main__":
    main()
