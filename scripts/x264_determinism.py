"""Encode the same frames several times with libx264 (PyAV) and print the MD5 of each MP4.

Why: `keep restore` with and without --no-overlap hands the encoder identical frames and pts, yet
the MP4 bytes can differ. This script takes the pipeline out of the question: one process, one
thread, the same RGB frames, the same options, encoded N times in a row. Different hashes mean the
non-determinism is inside the encode (PyAV + libx264 of this build), not in keep's stages.

    python scripts/x264_determinism.py [--threads 1] [--repeats 4] [--width 750] [--video clip.mp4]

Measured here (2026-12-07; it comes and goes): real_1 at 388x512, 30 frames, gave 2 to 6 different
files in 6 runs. Cropped to 384x512, and with --x264-params mbtree=0, all runs gave the same file.
Only sizes that are not multiples of 16 differed (the synthetic 750x512 did once).
"""
from __future__ import annotations

import argparse
import hashlib
import io

import av
import numpy as np

from keep.io.source import ACCURATE


def synthetic_frames(width: int, height: int, count: int) -> list:
    """Smooth moving gradients plus fixed noise: enough texture for x264 to make real decisions."""
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 32, (height, width, 3), dtype=np.uint8)
    y, x = np.mgrid[0:height, 0:width]
    frames = []
    for t in range(count):
        base = ((x + 3 * t) % 256)[..., None] * np.array([1.0, 0.5, 0.25]) + ((y + t) % 128)[..., None]
        frames.append(np.clip(base, 0, 223).astype(np.uint8) + noise)
    return frames


def encode(frames: list, threads: int, crf: int = 18, params: str = "") -> str:
    buffer = io.BytesIO()
    container = av.open(buffer, "w", format="mp4")
    stream = container.add_stream("libx264", rate=20)
    stream.height, stream.width = frames[0].shape[:2]
    stream.pix_fmt = "yuv420p"
    stream.codec_context.thread_count = threads
    stream.options = {"crf": str(crf), "preset": "medium", **({"x264-params": params} if params else {})}
    for index, image in enumerate(frames):  # the same conversion as keep/io/writer.py
        frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(
            format="yuv420p", interpolation=ACCURATE, dst_colorspace=1)
        frame.pts = index
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode(None):
        container.mux(packet)
    container.close()
    return hashlib.md5(buffer.getvalue()).hexdigest()[:12]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="libx264 thread count (0 = auto)")
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--width", type=int, default=750)
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--frames", type=int, default=5)
    parser.add_argument("--x264-params", default="", help="e.g. mbtree=0 (which makes it deterministic here)")
    parser.add_argument("--video", default=None, help="encode the first --frames frames of this video instead of the synthetic ones")
    args = parser.parse_args()
    if args.video:
        from keep.io.source import read_frames
        frames = list(read_frames(args.video, max_frames=args.frames))
    else:
        frames = synthetic_frames(args.width, args.height, args.frames)
    hashes = [encode(frames, args.threads, params=args.x264_params) for _ in range(args.repeats)]
    print(f"av {av.__version__}, threads {args.threads}, {frames[0].shape[1]}x{frames[0].shape[0]}, {args.frames} frames: {hashes}")
    print("deterministic" if len(set(hashes)) == 1 else f"NOT deterministic: {len(set(hashes))} different files")


if __name__ == "__main__":
    main()
