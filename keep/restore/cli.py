"""``keep restore``: restore face videos (a video, a frame folder, or a folder of videos)."""
from __future__ import annotations

import argparse
import math
import signal
import sys
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterator, Optional, Tuple

from keep.io.errors import InputError


def add_device_arguments(parser: argparse.ArgumentParser, strict_fp32: bool) -> None:
    """--device and the precision flags (dest ``precision``), shared by ``keep restore`` and ``keep live``."""
    from keep.deploy.options import add_backend_argument
    parser.add_argument("--device", choices=["auto", "cuda", "mps", "cpu"], default="auto")
    add_backend_argument(parser)
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
  torchrun --standalone --nproc_per_node 4 -m keep.cli restore archive/ -o results --skip-existing
                                                       # a folder shared over 4 GPUs, resumable
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


def parse_shots(text: str) -> str:
    """--shots: auto, off, or a readable cut-list file (checked now: a one-line error, not a traceback)."""
    if text in ("auto", "off"):
        return text
    from keep.face.shots import read_cut_list
    path = Path(text)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{text!r} is neither auto, off nor a cut-list file")
    try:
        read_cut_list(path)
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return str(path)


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
    parser.add_argument("--window", type=_number(int, "a whole number", low=1), default=None,
                        help="frames per network call (default 20, the release's; 4 when the network runs on the "
                             "CPU, so the first frame is out within about a minute: the Kalman state is carried "
                             "across windows either way)")
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
    parser.add_argument("--stream", type=_number(int, "a stream index", low=0), default=None,
                        help="the video stream to restore, by its index in the file (as ffprobe lists them; "
                             "default: the video stream with the most frames, cover pictures last)")
    parser.add_argument("--max-batch", type=_number(int, "a whole number", low=1), default=None,
                        help="at most this many faces per network call with --all-faces (default: from the "
                             "device's free memory); lower it if the GPU runs out of memory")
    parser.add_argument("--frame-memory", type=_number(float, "a number of GiB", low=0.0), default=None,
                        metavar="GIB",
                        help="GiB of decoded frames held in memory; beyond it new frames wait in temporary files "
                             "next to the output (default: a quarter of the available memory, at most 4; "
                             "matters for 4K at 10 bits and 8K)")
    add_device_arguments(parser, strict_fp32=True)
    parser.add_argument("--max-gap", type=_number(int, "a whole number", low=0), default=20,
                        help="frames without a detection bridged by interpolation inside a track (default 20)")
    parser.add_argument("--smooth-sigma", type=_number(float, "a number", low=0.0, high=50.0), default=5.0,
                        help="temporal Gaussian smoothing of the face landmarks, in frames (default 5, the "
                             "paper's; 0 = off). Smoothing removes alignment jitter but lags fast head turns "
                             "(up to ~38 px at sigma 5); lower it for fast motion")
    parser.add_argument("--shots", type=parse_shots, default="auto", metavar="auto|off|FILE",
                        help="shot boundaries, each ending every face track (fresh tracking, smoothing and network "
                             "state per shot): auto (detected: cuts, dissolves, fades; default), off, or a file "
                             "listing the first frame (0-based) of each new shot, e.g. from PySceneDetect")
    parser.add_argument("--min-face", type=_number(float, "a number", low=0.0), default=48.0,
                        help="faces whose aligned crop covers fewer source pixels (side) are left untouched and "
                             "counted (default 48; 0 = restore every face found)")
    parser.add_argument("--save-faces", action="store_true", help="also write restored faces as PNG")
    parser.add_argument("--save-cropped", action="store_true", help="also write the aligned input crops as PNG")
    parser.add_argument("--save-frames", action="store_true", help="also write the final frames as PNG")
    parser.add_argument("--compare", action="store_true", help="also write <name>_compare.mp4 (input | output)")
    existing = parser.add_mutually_exclusive_group()
    existing.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    existing.add_argument("--skip-existing", action="store_true",
                          help="keep finished outputs and restore only the inputs without one (resume a batch)")
    parser.add_argument("--crf", type=_number(int, "a whole number", low=0, high=MAX_CRF), default=18,
                        help=f"x264 quality of the written video, 0 (lossless) to {MAX_CRF} (default 18)")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="hide progress bars")
    overlap = parser.add_mutually_exclusive_group()
    overlap.add_argument("--overlap", dest="overlap", action="store_true", default=None,
                         help="decode, network and paste-back + encode in concurrent threads (default when the "
                              "network runs on a GPU; same output)")
    overlap.add_argument("--no-overlap", dest="overlap", action="store_false",
                         help="every stage in one thread (default on the CPU, where the network uses every core)")


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


def _expected_errors() -> tuple:
    """Errors that end one input (or the run) with a one-line message instead of a traceback."""
    import av

    from keep.checkpoint import CheckpointError
    from keep.weights import WeightsNotFoundError
    return InputError, WeightsNotFoundError, CheckpointError, ValueError, OSError, av.error.FFmpegError


def _reporter(tag: str = "") -> Callable[[BaseException], None]:
    from keep.restore import preflight

    def report(err: BaseException) -> None:
        message = preflight.describe_os_error(err) if isinstance(err, OSError) else str(err)
        print(f"keep restore{' ' + tag if tag else ''}: error: {message}", file=sys.stderr)
    return report


@dataclass
class _Plan:
    """What a run will do, decided before any model is loaded."""
    items: list        # PlannedInput to restore
    total: int         # inputs the user named
    failures: int      # refused before the work: unreadable, or an output in the way
    skipped: int       # finished outputs kept (--skip-existing)


def _wants_extras(args: argparse.Namespace) -> bool:
    return args.save_faces or args.save_cropped or args.save_frames


def _plan(args: argparse.Namespace) -> _Plan:
    """Inputs, output names and every check that needs no model (raises the expected errors)."""
    from keep.io.source import find_inputs
    from keep.restore import preflight

    planned = preflight.plan_names(find_inputs(args.input))
    preflight.check_outputs(planned, args.output, args.compare, _wants_extras(args))
    good, bad = preflight.split_checked(planned, args.fps)
    for _, reason in bad:
        print(f"keep restore: error: {reason}", file=sys.stderr)
    failures, skipped = len(bad), 0
    for item in list(good):
        # Outputs are written atomically, so an existing one is a finished one.
        if args.skip_existing and all(p.exists() for p in item.outputs(args.output, args.compare)):
            good.remove(item)
            skipped += 1
            continue
        try:
            present = preflight.existing_outputs(item, args.output, args.compare, _wants_extras(args))
        except InputError as err:    # a folder of the user's where --save-* would write
            good.remove(item)
            print(f"keep restore: error: {err}", file=sys.stderr)
            failures += 1
            continue
        if not present or args.overwrite:
            continue
        if args.skip_existing and present == [item.extras_dir(args.output)]:
            continue    # its video is gone: restored again, and its own --save-* folder replaced with it
        good.remove(item)
        print(f"keep restore: error: {present[0]} already exists; pass --overwrite to replace it or "
              f"--skip-existing to keep it", file=sys.stderr)
        failures += 1
    for item in good:
        for note in item.notes:
            print(f"note: {item.path}: {note}", file=sys.stderr)
    return _Plan(good, len(planned), failures, skipped)


def _claim(plan: _Plan, args: argparse.Namespace):
    """Lock this run's outputs (a second restore into them is refused), then remove what a killed run
    left (safe now: no live run holds these names). Returns the locks to release at the end."""
    from keep.restore import preflight

    locks = preflight.claim(plan.items, args.output)
    for item in plan.items:
        for stale in preflight.remove_stale_partials(item, args.output):
            print(f"note: removed {stale}: a partial file left by an interrupted run", file=sys.stderr)
    return locks


def _make_restorer(args: argparse.Namespace, progress_bars: bool):
    from keep.restore import preflight
    from keep.restore.options import RestoreOptions
    from keep.restore.pipeline import VideoRestorer

    options = RestoreOptions(
        output_dir=args.output, weights=args.weights, detector=args.detector, aligned=args.aligned,
        all_faces=args.all_faces, window=args.window, reset_state_per_window=args.reset_state_per_window,
        image_baseline=args.image_baseline, upscale=args.upscale, bg_upsampler=args.bg_upsampler,
        bg_tile=args.bg_tile, face_upsample=args.face_upsample, mask=args.mask, draw_box=args.draw_box,
        fps=args.fps, stream=args.stream, max_batch=args.max_batch, frame_memory=args.frame_memory, device=args.device,
        precision=args.precision, sigma=args.smooth_sigma, max_gap=args.max_gap, shots=args.shots,
        min_face=args.min_face, save_faces=args.save_faces, save_cropped=args.save_cropped,
        save_frames=args.save_frames, compare=args.compare, overwrite=args.overwrite, crf=args.crf,
        progress=progress_bars, overlap=args.overlap, backend=args.backend)
    preflight.check_model_files(options)   # every file found (or fetched) before any network loads
    if progress_bars:   # the 634 MB network takes seconds to load (a minute on a busy CPU): say so
        print("loading the models...", file=sys.stderr, flush=True)
    return VideoRestorer(options)


def _run_items(restorer, items: list, args: argparse.Namespace, progress: dict,
               report: Callable[[BaseException], None], tag: str = "") -> Tuple[int, int]:
    """Restore ``items`` one after another: (restored, failed). A failed input leaves no output."""
    from keep.restore import preflight

    expected = _expected_errors()
    restored = failed = 0
    for item in items:
        extras = None
        try:
            extras = preflight.Extras(item.extras_dir(args.output), _wants_extras(args))
            summary = restorer.run(item.path, item.name, extras_dir=extras.path)
            extras.commit(args.overwrite or args.skip_existing)   # --skip-existing: only unfinished ones remain
        except expected as err:
            if extras is not None:
                extras.discard()
            report(err)
            failed += 1
            continue
        except BaseException:
            if extras is not None:
                extras.discard()
            raise
        summary.notes += item.notes
        progress["done"] += 1
        restored += 1
        text = summary.describe(args.aligned)
        print(f"{tag} {text}" if tag else text)
    return restored, failed


def _totals(plan: _Plan, restored: int, processes: int = 1) -> Optional[str]:
    if plan.total <= 1 and not plan.skipped:
        return None
    line = f"{restored} of {plan.total} inputs restored"
    if plan.skipped:
        line += f", {plan.skipped} already done and kept"
    if processes > 1:
        line += f" ({processes} processes)"
    return line


def _restore(args: argparse.Namespace, progress: dict) -> int:
    from keep.restore import preflight
    from keep.restore.shard import ShardGroup, shard_from_environment

    shard = shard_from_environment()
    if shard is not None:
        with ShardGroup(shard) as group:
            return _restore_sharded(args, progress, shard, group)
    report = _reporter()
    output = preflight.OutputFolder(args.output)
    locks = None
    try:
        plan = _plan(args)
        progress["total"] = plan.total
        if not plan.items:
            if plan.skipped and not plan.failures:
                print(_totals(plan, 0))
                return 0
            return 1
        output.prepare()
        locks = _claim(plan, args)
        restorer = _make_restorer(args, args.progress)
    except _expected_errors() as err:
        _release(locks, output)
        report(err)
        return 1
    except BaseException:   # Ctrl-C / SIGTERM while the model loads: no empty folder left either
        _release(locks, output)
        raise
    try:
        restored, failed = _run_items(restorer, plan.items, args, progress, report)
    finally:
        _release(locks, output)
    totals = _totals(plan, restored)
    if totals:
        print(totals)
    return 1 if plan.failures or failed else 0


def _release(locks, output) -> None:
    if locks is not None:
        locks.release()
    output.remove_if_empty()


def _restore_sharded(args: argparse.Namespace, progress: dict, shard, group) -> int:
    """One rank of a torchrun job (keep/restore/shard.py): rank 0 plans and splits, every rank
    restores its share, rank 0 prints the totals; every rank exits with the job's status."""
    from keep.restore import preflight
    from keep.restore.shard import input_size, select_gpu, split_by_size

    report = _reporter(shard.tag())
    output = preflight.OutputFolder(args.output)
    message = locks = None
    if shard.is_leader:
        try:
            plan = _plan(args)
            if plan.items:
                output.prepare()
                locks = _claim(plan, args)   # held by the leader for the whole job
            shares = split_by_size([input_size(item.path) for item in plan.items], shard.world_size)
            message = (plan, shares)
        except _expected_errors() as err:
            _release(locks, output)
            report(err)
    message = group.broadcast(message)
    if message is None:
        return 1
    plan, shares = message
    mine = [plan.items[i] for i in shares[shard.rank]]
    progress["total"] = len(mine)
    restored = failed = 0
    if mine:
        try:
            select_gpu(shard, args.device)
            # One progress bar per node: the bars of several processes would overwrite each other.
            restorer = _make_restorer(args, args.progress and shard.local_rank == 0)
        except _expected_errors() as err:
            report(err)
            failed = len(mine)
        else:
            restored, failed = _run_items(restorer, mine, args, progress, report, shard.tag())
    results = group.gather((restored, failed))
    status = None
    if shard.is_leader:
        # Every rank sends its result after its last write, so nothing is being written any more.
        _release(locks, output)
        restored = sum(r for r, _ in results)
        failed = sum(f for _, f in results)
        print(_totals(plan, restored, shard.world_size) or f"{restored} of {plan.total} inputs restored")
        status = 1 if plan.failures or failed or not (plan.items or plan.skipped) else 0
    return group.broadcast(status)
