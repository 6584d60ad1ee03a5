"""``keep restore``: restore face videos (a video, a frame folder, or a folder of videos)."""
from __future__ import annotations

import argparse
import math
import signal
import sys
import threading
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterator, Optional

from keep.io.errors import InputError


def add_device_arguments(parser: argparse.ArgumentParser, strict_fp32: bool) -> None:
    """--device and the precision flags (dest ``precision``), shared by ``keep restore`` and ``keep live``."""
    parser.add_argument("--device", choices=["auto", "cuda", "mps", "cpu"], default="auto")
    precision = parser.add_mutually_exclusive_group()
    precision.add_argument("--fp16", dest="precision", action="store_const", const="fp16", default="fp32",
                           help="float16 autocast (GPU)")
    precision.add_argument("--bf16", dest="precision", action="store_const", const="bf16",
                           help="bfloat16 autocast (GPU)")
    if strict_fp32:
        precision.add_argument("--strict-fp32", dest="precision", action="store_const", const="fp32-strict",
                               help="true fp32 on CUDA: TF32 off for every convolution and matmul (PyTorch lets "
                                    "cuDNN use TF32 by default); the official numerics, about half the speed")


EPILOG = """examples:
  keep restore clip.mp4 -o results                     # in-the-wild video -> results/clip.mp4 (fps, audio kept)
  keep restore clips/ -o results --detector dlib       # every video of a folder, offline face detector
  keep restore crops/ -o results --aligned             # frames that are already aligned face crops
  keep restore clip.mp4 -o results --all-faces --upscale 2 --compare
"""

MAX_FPS = 1000                 # beyond this the MP4 time base cannot hold the frame times
MAX_FPS_DENOMINATOR = 10 ** 6  # 29.970029 is fine; 12.3456789123 overflows the container's 32-bit clock
MAX_CRF = 51                   # libx264 (8-bit): 0 lossless ... 51 worst


def _number(kind: Callable, what: str, low=None, high=None) -> Callable[[str], object]:
    """An argparse ``type`` that parses ``kind`` and checks ``low <= value <= high``: a bad value is a
    one-line usage error (exit 2), never a traceback."""
    def parse(text: str):
        try:
            value = kind(text)
        except (ValueError, ZeroDivisionError, OverflowError, ArithmeticError):
            raise argparse.ArgumentTypeError(f"'{text}' is not {what}") from None
        if isinstance(value, float) and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"'{text}' is not {what}")
        if (low is not None and value < low) or (high is not None and value > high):
            span = (f"between {low} and {high}" if low is not None and high is not None
                    else f">= {low}" if low is not None else f"<= {high}")
            raise argparse.ArgumentTypeError(f"{text} is out of range: must be {span}")
        return value
    return parse


def parse_fps(text: str) -> Fraction:
    """``--fps``: a positive rate up to MAX_FPS, as a number or a fraction (``25``, ``29.97``, ``30000/1001``)."""
    what = "a frame rate; give a positive number or fraction such as 25, 29.97 or 30000/1001"
    value = _number(Fraction, what)(text)
    if not 0 < value <= MAX_FPS:
        raise argparse.ArgumentTypeError(f"{text} is out of range: the frame rate must be > 0 and <= {MAX_FPS}")
    if value.denominator > MAX_FPS_DENOMINATOR:
        raise argparse.ArgumentTypeError(f"{text} has too many decimals for a video clock; give at most 6 "
                                         f"decimals or a fraction such as 30000/1001")
    return value


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
    # Both flags write ``all_faces``; argparse would take the default from the first (store_false ->
    # True), i.e. every face. The documented default is the centre face.
    parser.set_defaults(all_faces=False)
    parser.add_argument("--window", type=_number(int, "a whole number", low=1), default=20, help="frames per network call (default 20)")
    parser.add_argument("--reset-state-per-window", action="store_true",
                        help="restart the Kalman recurrence every window, as the release does")
    parser.add_argument("--image-baseline", action="store_true",
                        help="restore each frame alone (no temporal propagation)")
    parser.add_argument("-s", "--upscale", type=_number(int, "a whole number", low=1, high=8), default=1, help="scale of the whole output frame (default 1)")
    parser.add_argument("--bg-upsampler", choices=["realesrgan"], default=None,
                        help="upsample the background with Real-ESRGAN x2 (weights from the registry)")
    parser.add_argument("--bg-tile", type=_number(int, "a whole number", low=0), default=400, help="Real-ESRGAN tile size, 0 = no tiling")
    parser.add_argument("--face-upsample", action="store_true",
                        help="Real-ESRGAN on the restored face before pasting (with --upscale > 1)")
    parser.add_argument("--mask", choices=["auto", "parse", "square"], default="auto",
                        help="paste-back mask: parsing net if its weights are present (auto), always (parse), "
                             "or the feathered crop square")
    parser.add_argument("--draw-box", action="store_true", help="draw the pasted face's box in green")
    parser.add_argument("--fps", type=parse_fps, default=None,
                        help="output frame rate, e.g. 25 or 30000/1001 (default: the input's; frame folders: 20); "
                             "a video is then re-timed at this rate and its audio is not copied")
    add_device_arguments(parser, strict_fp32=True)
    parser.add_argument("--max-gap", type=_number(int, "a whole number", low=0), default=20,
                        help="frames without a detection bridged by interpolation inside a track (default 20)")
    parser.add_argument("--smooth-sigma", type=_number(float, "a number", low=0.0, high=50.0), default=5.0,
                        help="temporal Gaussian smoothing of the face landmarks, in frames (default 5, the "
                             "paper's; 0 = off). Smoothing removes alignment jitter but lags fast head turns "
                             "(up to ~38 px at sigma 5); lower it for fast motion")
    parser.add_argument("--save-faces", action="store_true", help="also write restored faces as PNG")
    parser.add_argument("--save-cropped", action="store_true", help="also write the aligned input crops as PNG")
    parser.add_argument("--save-frames", action="store_true", help="also write the final frames as PNG")
    parser.add_argument("--compare", action="store_true", help="also write <name>_compare.mp4 (input | output)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    parser.add_argument("--crf", type=_number(int, "a whole number", low=0, high=MAX_CRF), default=18,
                        help=f"x264 quality of the written video, 0 (lossless) to {MAX_CRF} (default 18)")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="hide progress bars")
    parser.add_argument("--no-overlap", dest="overlap", action="store_false",
                        help="run decoding, the network and encoding in one thread (same output, slower)")


class Interrupted(BaseException):
    """SIGINT (Ctrl-C) or SIGTERM: unwinds the run like KeyboardInterrupt, so the writers abort and
    remove their partial files; ``code`` is the shell's 128 + signal number."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.code = 128 + signum
        self.name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name


@contextmanager
def _signals_raise() -> Iterator[None]:
    """Within the block SIGINT and SIGTERM raise :class:`Interrupted` (once: a second signal during the
    clean-up is ignored, so the clean-up finishes). Previous handlers come back afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    def handler(signum, _frame):
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
        raise Interrupted(signum)
    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def main(args: argparse.Namespace) -> int:
    progress = {"done": 0, "total": 0}
    try:
        with _signals_raise():
            return _restore(args, progress)
    except (Interrupted, KeyboardInterrupt) as err:
        code = err.code if isinstance(err, Interrupted) else 128 + signal.SIGINT
        name = err.name if isinstance(err, Interrupted) else "Ctrl-C"
        done = f"; {progress['done']} of {progress['total']} inputs were completed" if progress["total"] > 1 else ""
        print(f"keep restore: stopped by {name}: the unfinished output was removed{done}", file=sys.stderr)
        return code


def _restore(args: argparse.Namespace, progress: dict) -> int:
    import av

    from keep.checkpoint import CheckpointError
    from keep.io.source import find_inputs
    from keep.restore import preflight
    from keep.restore.options import RestoreOptions
    from keep.weights import WeightsNotFoundError

    expected = (InputError, WeightsNotFoundError, CheckpointError, ValueError)

    def report(err: BaseException) -> None:
        if isinstance(err, OSError):
            message = preflight.describe_os_error(err)
        else:
            message = str(err)
        print(f"keep restore: error: {message}", file=sys.stderr)

    output = preflight.OutputFolder(args.output)
    try:
        # Everything that can be checked without the model, before loading it: inputs, names, outputs.
        inputs = find_inputs(args.input)
        planned = preflight.plan_names(inputs)
        preflight.check_outputs(planned, args.output, args.compare)
        good, bad = preflight.split_checked(planned, args.fps)
        for _, reason in bad:
            print(f"keep restore: error: {reason}", file=sys.stderr)
        failures = len(bad)
        if not args.overwrite:
            for item in list(good):
                present = preflight.existing_outputs(item, args.output, args.compare)
                if present:
                    print(f"keep restore: error: {present[0]} already exists; pass --overwrite to replace it",
                          file=sys.stderr)
                    good.remove(item)
                    failures += 1
        progress["total"] = len(planned)
        if not good:
            return 1
        for item in good:
            for stale in preflight.remove_stale_partials(item, args.output):
                print(f"note: removed {stale}: a partial file left by an interrupted run", file=sys.stderr)
        for item in good:
            for note in item.notes:
                print(f"note: {item.path}: {note}", file=sys.stderr)
        output.prepare()
        options = RestoreOptions(
            output_dir=args.output, weights=args.weights, detector=args.detector, aligned=args.aligned,
            all_faces=args.all_faces, window=args.window, reset_state_per_window=args.reset_state_per_window,
            image_baseline=args.image_baseline, upscale=args.upscale, bg_upsampler=args.bg_upsampler,
            bg_tile=args.bg_tile, face_upsample=args.face_upsample, mask=args.mask, draw_box=args.draw_box,
            fps=args.fps, device=args.device, precision=args.precision, sigma=args.smooth_sigma,
            max_gap=args.max_gap, save_faces=args.save_faces, save_cropped=args.save_cropped,
            save_frames=args.save_frames, compare=args.compare, overwrite=args.overwrite, crf=args.crf,
            progress=args.progress, overlap=args.overlap)
        from keep.restore.pipeline import VideoRestorer
        restorer = VideoRestorer(options)
    except expected + (OSError,) as err:
        output.remove_if_empty()
        report(err)
        return 1
    except BaseException:   # Ctrl-C / SIGTERM while the model loads: no empty folder left either
        output.remove_if_empty()
        raise
    try:
        for item in good:
            extras = preflight.ExtrasGuard(item.extras_dir(args.output))
            try:
                summary = restorer.run(item.path, item.name)
            except expected + (OSError, av.error.FFmpegError) as err:
                extras.discard()
                report(err)
                failures += 1
                continue
            except BaseException:
                extras.discard()
                raise
            summary.notes += item.notes
            progress["done"] += 1
            print(summary.describe(options.aligned))
    finally:
        output.remove_if_empty()
    if len(planned) > 1:
        print(f"{len(planned) - failures} of {len(planned)} inputs restored")
    return 1 if failures else 0
