"""Time each network backend (keep restore --backend) against eager PyTorch, in one process, interleaved.

For every configuration (backend, precision) it times, on the same N frames of the looped ``--clip``:
the network alone (the aligned crops through ``restore_window`` in windows, state carried), ``keep
restore --aligned`` on those crops as a frame folder, and ``keep restore`` on the in-the-wild clip
(dlib detection, alignment, paste-back, encoding). Rounds are interleaved (every configuration once
per round) and the best of each kept: on a shared machine the load drifts, so only ratios measured
side by side mean something. Models are loaded (and graphs exported) before the timing.

    python scripts/benchmark_backends.py --clip real_1.mp4 --fill ../shared/conformance/fill.py --frames 4
    python scripts/benchmark_backends.py --clip real_1.mp4 --net tiny --frames 8 --rounds 3
"""
from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchmark_restore  # noqa: E402  (make_weights, make_clip: the same weights and clips as that script)


def cpu_model() -> str:
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> set:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clip", type=Path, required=True, help="in-the-wild face video (one face in every frame)")
    parser.add_argument("--fill", type=Path, default=None, help="a conformance fill.py for the weights")
    parser.add_argument("--net", choices=["real", "tiny"], default="real")
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--window", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds (best kept)")
    parser.add_argument("--configs", nargs="*",
                        default=["torch:fp32", "onnxruntime:fp32", "openvino:fp32", "openvino:bf16"],
                        help="backend:precision pairs (openvino:bf16 is skipped on CPUs without native bf16)")
    parser.add_argument("--parts", nargs="*", default=["network", "aligned", "wild"])
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()

    import cv2

    from keep.restore.options import RestoreOptions
    from keep.restore.pipeline import VideoRestorer
    from keep.restore.restorer import FaceRestorer

    benchmark_restore.SOURCE_CLIP = args.clip
    work = Path(args.workdir or tempfile.mkdtemp(prefix="keep_backends_"))
    work.mkdir(parents=True, exist_ok=True)
    flags = cpu_flags()
    print(f"CPU: {cpu_model()}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}; "
          f"AMX-BF16: {'amx_bf16' in flags}, AVX512-BF16: {'avx512_bf16' in flags}", flush=True)
    weights = work / f"{args.net}.pth"
    if not weights.is_file():   # a rerun in the same --workdir reuses the weights and their exported graphs
        benchmark_restore.make_weights(args.net, weights, args.fill)
    clip = benchmark_restore.make_clip(args.frames, work / f"clip_{args.frames}.mp4")

    def options(backend: str, precision: str, out: Path, **extra) -> RestoreOptions:
        return RestoreOptions(output_dir=out, weights=str(weights), detector="dlib", window=args.window,
                              device="cpu", precision=precision, overwrite=True, progress=False, mask="square",
                              backend=backend, **extra)

    restorers, notes = {}, {}
    for config in args.configs:
        backend, precision = config.split(":")
        try:
            restorer = VideoRestorer(options(backend, precision, work / "out"))
        except ValueError as err:   # e.g. no native bf16 on this CPU: say so and go on
            print(f"  {config}: skipped ({err})", flush=True)
            continue
        restorers[config] = (restorer, backend, precision)
        notes[config] = "; ".join(restorer.notes) or "eager PyTorch"
    # the crops: one untimed run (also warms the torch path)
    first = next(iter(restorers))
    restorer, backend, precision = restorers[first]
    restorer.options = options(backend, precision, work / "crops", save_cropped=True)
    restorer.run(clip)
    crop_dir = work / "crops" / clip.stem / "cropped_faces"
    crops = [cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in sorted(crop_dir.iterdir())]
    if len(crops) != args.frames:
        raise SystemExit(f"the detector found a face in {len(crops)} of {args.frames} frames; use another clip")

    def network(config: str) -> float:
        restorer, _, _ = restorers[config]
        faces = FaceRestorer(restorer.net, restorer.device, "fp32")
        start = time.perf_counter()
        for begin in range(0, len(crops), args.window):
            faces.restore(0, crops[begin:begin + args.window])
        return len(crops) / (time.perf_counter() - start)

    def end_to_end(config: str, aligned: bool) -> float:
        restorer, backend, precision = restorers[config]
        restorer.options = options(backend, precision, work / f"out_{config.replace(':', '_')}", aligned=aligned)
        start = time.perf_counter()
        summary = restorer.run(crop_dir if aligned else clip)
        return summary.frames / (time.perf_counter() - start)

    parts = {"network": network, "aligned": lambda c: end_to_end(c, True), "wild": lambda c: end_to_end(c, False)}
    rates = {(c, p): [] for c in restorers for p in args.parts}
    for round_ in range(args.rounds):
        for part in args.parts:
            for config in restorers:
                try:
                    rates[config, part].append(parts[part](config))
                except Exception:   # report and go on: the other configurations' figures still count
                    import traceback
                    traceback.print_exc()
                    rates[config, part].append(float("nan"))
                print(f"  round {round_ + 1} {part:8s} {config:18s} {rates[config, part][-1]:.4f} frames/s", flush=True)
    name = "keep-v1" if args.net == "real" else "keep-tiny at 128 px"
    print(f"\n{name}{' (filled)' if args.fill else ' (random)'}, {args.frames} frames, window {args.window}, "
          f"best of {args.rounds} interleaved rounds; frames/s (ratio to torch:fp32)")
    base = "torch:fp32" if "torch:fp32" in restorers else next(iter(restorers))
    print(f"  {'config':18s} " + " ".join(f"{p:>20s}" for p in args.parts))
    for config in restorers:
        cells = []
        for part in args.parts:
            best, ref = max(rates[config, part]), max(rates[base, part])
            cells.append(f"{best:9.4f} ({best / ref:5.2f}x)")
        print(f"  {config:18s} " + " ".join(f"{c:>20s}" for c in cells))
    for config, note in notes.items():
        print(f"  {config}: {note}")


if __name__ == "__main__":
    main()
