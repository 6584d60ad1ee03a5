"""Peak memory of the frames `keep restore` holds, with and without `--frame-memory` (frames beyond it
wait in unlinked temporary files, keep/restore/frame_spill.py).

A benchmark, not a test. A clip of large frames (the test clip's face scaled to fill 4K, 8 or 10 bits)
is restored with `--aligned` (no detection, so the run is fast and what is held is the frames: the
shot look-ahead, a window and the paste-back queue) by a tiny random KEEP, once per setting, each in
a fresh process. Printed per setting: peak RSS, and peak anonymous RSS (the process's own memory,
sampled every 20 ms from /proc; a spilled frame's pages are file pages the OS can drop).

    python scripts/benchmark_frame_memory.py VIDEO [--frames 60] [--deep] [--budgets auto 0.5]
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _clip(video: Path, frames: int, deep: bool, out: Path) -> Path:
    import av
    import cv2
    import numpy as np

    from keep.io.source import read_frames
    faces = read_frames(video, max_frames=frames)
    with av.open(str(out), "w") as container:
        stream = container.add_stream("libx264", rate=20)
        stream.width, stream.height = 3840, 2160
        stream.pix_fmt = "yuv420p10le" if deep else "yuv420p"
        stream.options = {"crf": "30", "preset": "ultrafast"}
        for index, face in enumerate(faces):
            image = cv2.resize(face, (3840, 2160), interpolation=cv2.INTER_LINEAR)
            frame = av.VideoFrame.from_ndarray(image.astype(np.uint16) * 257 if deep else image,
                                               format="rgb48le" if deep else "rgb24")
            frame = frame.reformat(format=stream.pix_fmt)
            frame.pts = index
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return out


def _status_kib(pid: int, key: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _run(clip: Path, weights: Path, out: Path, budget: str) -> dict:
    command = [sys.executable, "-m", "keep.cli", "restore", str(clip), "-o", str(out), "--weights", str(weights),
               "--aligned", "--device", "cpu", "--no-progress", "--window", "20"]
    if budget != "auto":
        command += ["--frame-memory", budget]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peaks = {"VmHWM": 0, "RssAnon": 0}

    def sample():
        while process.poll() is None:
            for key in peaks:
                peaks[key] = max(peaks[key], _status_kib(process.pid, key))
            time.sleep(0.02)
    sampler = threading.Thread(target=sample)
    started = time.perf_counter()
    sampler.start()
    output, _ = process.communicate()
    sampler.join()
    if process.returncode:
        raise SystemExit(output)
    spilled = [line.strip() for line in output.splitlines() if "held in temporary files" in line]
    return {"budget": budget, "seconds": time.perf_counter() - started, "peak_rss_gib": peaks["VmHWM"] / 2 ** 20,
            "peak_anon_gib": peaks["RssAnon"] / 2 ** 20, "spilled": spilled[0] if spilled else "none"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("video", type=Path)
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--deep", action="store_true", help="10-bit frames (uint16 pixels are held too)")
    parser.add_argument("--budgets", nargs="+", default=["auto", "0.5"])
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "tests"))
    from tiny_models import random_tiny_checkpoint
    with tempfile.TemporaryDirectory(prefix="keep-frame-memory-") as folder:
        folder = Path(folder)
        weights = random_tiny_checkpoint(folder / "tiny.pth", 128)
        clip = _clip(args.video, args.frames, args.deep, folder / "clip4k.mp4")
        print(f"4K{' 10-bit' if args.deep else ''}, {args.frames} frames, --aligned, tiny random KEEP at 128 px")
        for budget in args.budgets:
            row = _run(clip, weights, folder / f"out-{budget}", budget)
            print(f"--frame-memory {row['budget']:>5}: peak RSS {row['peak_rss_gib']:.2f} GiB, peak anonymous "
                  f"{row['peak_anon_gib']:.2f} GiB, {row['seconds']:.1f} s; spilled: {row['spilled']}", flush=True)


if __name__ == "__main__":
    main()
