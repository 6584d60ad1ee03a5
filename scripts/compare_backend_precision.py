"""Reduced precision of an exported backend against its fp32, per frame over a face clip.

The released architecture (``--fill``: the conformance fill.py weights; the real checkpoint with
``--weights``) is exported once; the clip's first ``--frames`` frames, resized to the network's size
(give an aligned face clip: the frames are taken as face crops), are restored in windows with the
state carried, in fp32 and in the reduced precision; per frame: PSNR of the uint8 outputs against
fp32's and the fraction of the 16x16 codes chosen identically.

    python scripts/compare_backend_precision.py --clip synthetic_1.mp4 --fill fill.py --frames 10 --window 5
"""
from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchmark_restore  # noqa: E402  (make_weights)


def to_uint8(frames: torch.Tensor) -> np.ndarray:
    return frames.clamp(-1, 1).add(1).mul(127.5).round().byte().numpy()


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clip", type=Path, required=True)
    parser.add_argument("--fill", type=Path, default=None)
    parser.add_argument("--weights", type=Path, default=None, help="a real checkpoint (instead of --fill)")
    parser.add_argument("--frames", type=int, default=10)
    parser.add_argument("--window", type=int, default=5)
    parser.add_argument("--backend", default="openvino")
    parser.add_argument("--precision", default="bf16")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()

    import cv2

    from keep.deploy.backends import ExportedNetwork
    from keep.deploy.cache import cached_graphs
    from keep.io import open_source

    work = Path(args.workdir or tempfile.mkdtemp(prefix="keep_precision_"))
    work.mkdir(parents=True, exist_ok=True)
    weights = args.weights or benchmark_restore.make_weights("real", work / "real.pth", args.fill)
    folder, _ = cached_graphs(str(weights), None)
    with open_source(args.clip) as source:
        images = [f.image for f in itertools.islice(source, args.frames)]
    nets = {p: ExportedNetwork(folder, args.backend, precision=p) for p in ("fp32", args.precision)}
    size = nets["fp32"].img_size
    x = torch.from_numpy(np.stack([cv2.resize(i, (size, size), interpolation=cv2.INTER_LINEAR) for i in images]))
    x = x.permute(0, 3, 1, 2).float().div(255).sub(0.5).div(0.5)[None]
    results = {}
    for precision, net in nets.items():
        state, frames, codes = None, [], []
        for begin in range(0, x.shape[1], args.window):
            out, state = net.restore_window(x[:, begin:begin + args.window], state)
            frames.append(to_uint8(out[0]))
            codes += [c[0] for c in net.last_indices]
        results[precision] = (np.concatenate(frames), np.stack(codes))
    ref_frames, ref_codes = results["fp32"]
    frames, codes = results[args.precision]
    print(f"{args.backend} {args.precision} vs {args.backend} fp32, {'weights ' + str(args.weights) if args.weights else 'filled weights'}, "
          f"{args.clip.name} frames 0-{args.frames - 1}, window {args.window}, state carried")
    print("frame  PSNR (dB)  codes identical")
    for t in range(len(frames)):
        print(f"{t:5d}  {psnr(frames[t], ref_frames[t]):9.2f}  {(codes[t] == ref_codes[t]).mean():15.3f}")
    print(f"mean   {np.mean([psnr(a, b) for a, b in zip(frames, ref_frames)]):9.2f}  {(codes == ref_codes).mean():15.3f}")


if __name__ == "__main__":
    main()
