"""Peak memory of `keep degrade` on one long 512x512 clip (streamed through the encoder).

Usage: python scripts/benchmark_degrade_memory.py [FRAMES ...]   (default 100 900)
Each run is a fresh process (peak RSS = its ru_maxrss); the GT clip is a lossless-ish H.264 video of a
moving texture written first. Prints frames, peak RSS (MiB) and seconds.
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import resource, sys, time
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from keep.evaluation.degrade_cli import degrade_split
t = time.perf_counter()
degrade_split(Path(sys.argv[2]), "medium", Path(sys.argv[3]))
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, time.perf_counter() - t)
"""


def make_clip(path: Path, frames: int) -> None:
    import av
    import numpy as np
    rng = np.random.default_rng(0)
    base = np.kron(rng.integers(0, 256, (80, 80, 3), dtype=np.uint8), np.ones((8, 8, 1), np.uint8))
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25, options={"crf": "10"})
        stream.width = stream.height = 512
        stream.pix_fmt = "yuv420p"
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(base[i % 64:i % 64 + 512, :512]), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())


def main() -> None:
    counts = [int(a) for a in sys.argv[1:]] or [100, 900]
    with tempfile.TemporaryDirectory() as tmp:
        for n in counts:
            gt = Path(tmp) / f"gt{n}"
            gt.mkdir()
            make_clip(gt / "clip.mp4", n)
            started = time.perf_counter()
            out = subprocess.run([sys.executable, "-c", CHILD, str(ROOT), str(gt), str(Path(tmp) / f"lq{n}")],
                                 capture_output=True, text=True, check=True).stdout.split()
            print(f"{n} frames: peak RSS {float(out[-2]):.0f} MiB, degrade {float(out[-1]):.1f} s "
                  f"(process {time.perf_counter() - started:.1f} s)")


if __name__ == "__main__":
    main()
