"""Benchmark `keep live`: per-frame latency (capture -> emitted: median, p95, p99), throughput and
dropped frames, for a face clip replayed at its own rate.

    python scripts/benchmark_live.py --clip crops.mp4 --aligned              # tiny network, CPU
    python scripts/benchmark_live.py --clip face.mp4 --real --max-frames 6   # + the released architecture
    python scripts/benchmark_live.py --clip face.mp4 --real --device cuda --fill fill.py

Each configuration runs the real command (``python -m keep.cli live CLIP --realtime --stats ...``) in
its own process, twice: ``--when-behind drop`` (what a live source gets: latency bounded by
``--max-latency``, stale frames dropped) and ``--when-behind wait`` (every frame restored: the
restorer's own speed). Weights: the tiny network at 128 px and, with ``--real``, keep-v1, both with
seeded random weights (or ``--fill``, a conformance fill.py); speed does not depend on the values.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmark_restore import make_weights  # noqa: E402  (scripts/ is on sys.path when run as a script)


def run_live(args, weights: Path, policy: str, work: Path, max_frames: int) -> dict:
    stats = work / f"stats_{weights.stem}_{policy}.json"
    out = work / f"live_{weights.stem}_{policy}.mp4"
    command = [sys.executable, "-m", "keep.cli", "live", str(args.clip), "-o", str(out), "--overwrite",
               "--weights", str(weights), "--realtime", "--when-behind", policy, "--max-latency",
               str(args.max_latency), "--max-frames", str(max_frames), "--stats", str(stats), "--no-progress",
               "--device", args.device]
    if args.threads:
        command += ["--threads", str(args.threads)]
    command += ["--aligned"] if args.aligned else ["--detector", "dlib", "--mask", "square"]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    subprocess.run(command, check=True, capture_output=True, text=True, env=env)
    return json.loads(stats.read_text())


def row(label: str, policy: str, stats: dict) -> str:
    lat = stats["latency_ms"]
    restore = sorted(stats["restore_seconds"])
    median_restore = 1000 * restore[len(restore) // 2] if restore else float("nan")
    return (f"  {label:<22}{policy:<6}{stats['frames_read']:>6}{stats['frames_dropped']:>8}{stats['frames_written']:>8}"
            f"{lat['median']:>9.0f}{lat['p95']:>8.0f}{lat['p99']:>8.0f}{stats['throughput']:>9.2f}{median_restore:>10.0f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clip", type=Path, required=True, help="face clip to replay (aligned crops with --aligned)")
    parser.add_argument("--aligned", action="store_true", help="the clip holds aligned face crops")
    parser.add_argument("--max-frames", type=int, default=40, help="frames read per tiny run (default 40)")
    parser.add_argument("--real", action="store_true", help="also the released architecture (slow on CPU)")
    parser.add_argument("--real-frames", type=int, default=6, help="frames read per real-network run")
    parser.add_argument("--fill", type=Path, default=None, help="a conformance fill.py for the weights")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads of keep live")
    parser.add_argument("--max-latency", type=float, default=0.5)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="keep_live_bench_"))
    work.mkdir(parents=True, exist_ok=True)
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, CUDA: {gpu}; "
          f"device {args.device}, threads {args.threads or 'default'}, max latency {args.max_latency} s, "
          f"{'aligned crops' if args.aligned else 'in the wild (dlib)'}: {args.clip.name}")
    runs = [("tiny 128 px", make_weights("tiny", work / "tiny.pth", args.fill), args.max_frames)]
    if args.real:
        runs.append(("keep-v1 512 px", make_weights("real", work / "real.pth", args.fill), args.real_frames))
    print(f"  {'network':<22}{'mode':<6}{'read':>6}{'dropped':>8}{'written':>8}{'lat p50':>9}{'p95':>8}{'p99':>8}"
          f"{'frames/s':>9}{'restore':>10}   (latencies and restore time per frame in ms)")
    for label, weights, frames in runs:
        for policy in ("drop", "wait"):
            print(row(label, policy, run_live(args, weights, policy, work, frames)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
