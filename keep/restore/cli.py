"""``keep restore``: restore face videos (a video, a frame folder, or a folder of videos)."""
from __future__ import annotations

import argparse
import sys
from fractions import Fraction
from pathlib import Path

from keep.io.errors import InputError

EPILOG = """examples:
  keep restore clip.mp4 -o results                     # in-the-wild video -> results/clip.mp4 (fps, audio kept)
  keep restore clips/ -o results --detector dlib       # every video of a folder, offline face detector
  keep restore crops/ -o results --aligned             # frames that are already aligned face crops
  keep restore clip.mp4 -o results --all-faces --upscale 2 --compare
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    parser.add_argument("input", type=Path, help="video file (mp4/mov/avi/mkv/webm), folder of PNG/JPEG frames, "
                                                  "or folder of videos")
    parser.add_argument("-o", "--output", type=Path, required=True, help="output folder; writes <input name>.mp4")
    parser.add_argument("--weights", default="keep-v1", help="checkpoint path or registry name (default keep-v1)")
    parser.add_argument("--detector", choices=["retinaface", "dlib"], default="retinaface",
                        help="face detector: retinaface (release default, downloads weights) or dlib (offline)")
    parser.add_argument("--aligned", action="store_true", help="inputs are aligned face crops (resized to 512)")
    faces = parser.add_mutually_exclusive_group()
    faces.add_argument("--only-center-face", dest="all_faces", action="store_false",
                       help="restore one face: the one nearest the centre, followed over time (default)")
    faces.add_argument("--all-faces", dest="all_faces", action="store_true",
                       help="restore every face, each tracked with its own Kalman state")
    parser.add_argument("--window", type=int, default=20, help="frames per network call (default 20)")
    parser.add_argument("--reset-state-per-window", action="store_true",
                        help="restart the Kalman recurrence every window, as the release does")
    parser.add_argument("--image-baseline", action="store_true",
                        help="restore each frame alone (no temporal propagation)")
    parser.add_argument("-s", "--upscale", type=int, default=1, help="scale of the whole output frame (default 1)")
    parser.add_argument("--bg-upsampler", choices=["realesrgan"], default=None,
                        help="upsample the background with Real-ESRGAN x2 (weights from the registry)")
    parser.add_argument("--bg-tile", type=int, default=400, help="Real-ESRGAN tile size, 0 = no tiling")
    parser.add_argument("--face-upsample", action="store_true",
                        help="Real-ESRGAN on the restored face before pasting (with --upscale > 1)")
    parser.add_argument("--mask", choices=["auto", "parse", "square"], default="auto",
                        help="paste-back mask: parsing net if its weights are present (auto), always (parse), "
                             "or the feathered crop square")
    parser.add_argument("--draw-box", action="store_true", help="draw the pasted face's box in green")
    parser.add_argument("--fps", type=Fraction, default=None,
                        help="output frame rate (default: the input's; frame folders: 20)")
    parser.add_argument("--device", choices=["auto", "cuda", "mps", "cpu"], default="auto")
    precision = parser.add_mutually_exclusive_group()
    precision.add_argument("--fp16", dest="precision", action="store_const", const="fp16", default="fp32",
                           help="float16 autocast (GPU)")
    precision.add_argument("--bf16", dest="precision", action="store_const", const="bf16",
                           help="bfloat16 autocast (GPU)")
    precision.add_argument("--strict-fp32", dest="precision", action="store_const", const="fp32-strict",
                           help="true fp32 on CUDA: TF32 off for every convolution and matmul (PyTorch lets "
                                "cuDNN use TF32 by default); the official numerics, about half the speed")
    parser.add_argument("--max-gap", type=int, default=20,
                        help="frames without a detection bridged by interpolation inside a track (default 20)")
    parser.add_argument("--save-faces", action="store_true", help="also write restored faces as PNG")
    parser.add_argument("--save-cropped", action="store_true", help="also write the aligned input crops as PNG")
    parser.add_argument("--save-frames", action="store_true", help="also write the final frames as PNG")
    parser.add_argument("--compare", action="store_true", help="also write <name>_compare.mp4 (input | output)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    parser.add_argument("--crf", type=int, default=18, help="x264 quality of the written video (default 18)")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="hide progress bars")
    parser.add_argument("--no-overlap", dest="overlap", action="store_false",
                        help="run decoding, the network and encoding in one thread (same output, slower)")


def main(args: argparse.Namespace) -> int:
    from keep.checkpoint import CheckpointError
    from keep.io.source import find_inputs
    from keep.restore.options import RestoreOptions
    from keep.restore.pipeline import VideoRestorer
    from keep.weights import WeightsNotFoundError

    expected = (InputError, WeightsNotFoundError, CheckpointError, FileNotFoundError, ValueError)
    try:
        inputs = find_inputs(args.input)
        options = RestoreOptions(
            output_dir=args.output, weights=args.weights, detector=args.detector, aligned=args.aligned,
            all_faces=args.all_faces, window=args.window, reset_state_per_window=args.reset_state_per_window,
            image_baseline=args.image_baseline, upscale=args.upscale, bg_upsampler=args.bg_upsampler,
            bg_tile=args.bg_tile, face_upsample=args.face_upsample, mask=args.mask, draw_box=args.draw_box,
            fps=args.fps, device=args.device, precision=args.precision, max_gap=args.max_gap,
            save_faces=args.save_faces, save_cropped=args.save_cropped, save_frames=args.save_frames,
            compare=args.compare, overwrite=args.overwrite, crf=args.crf, progress=args.progress,
            overlap=args.overlap)
        restorer = VideoRestorer(options)
    except expected as err:
        print(f"keep restore: error: {err}", file=sys.stderr)
        return 1
    failures = 0
    for path in inputs:
        try:
            summary = restorer.run(path)
        except expected as err:
            print(f"keep restore: error: {err}", file=sys.stderr)
            failures += 1
            continue
        print(summary.describe(options.aligned))
    if len(inputs) > 1:
        print(f"{len(inputs) - failures} of {len(inputs)} inputs restored")
    return 1 if failures else 0
