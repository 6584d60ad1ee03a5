"""``keep live SOURCE -o OUTPUT``: restore a camera, a network stream, a pipe or a replayed file frame by
frame with bounded latency (causal network, causal face tracking). Full guide: docs/live.md."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from keep.io.errors import InputError
from keep.restore.cli import _number, add_device_arguments, parse_shots

EPILOG = """examples:
  keep live /dev/video0 -o call.mp4 --detector dlib             # webcam -> fragmented MP4, Ctrl-C to end
  keep live clip.mp4 --realtime -o live.ts                      # a file replayed at its own rate
  ffmpeg -i cam.mp4 -f mpegts - | keep live - -o - | ffplay -   # pipes in and out (MPEG-TS)
  keep live rtsp://camera/stream -o rtmp://server/app/key --max-latency 0.3
  keep live crops.mp4 --aligned -o faces.mp4 --when-behind wait # every frame, aligned 512 crops
"""


def _key_value(text: str):
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    return key, value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    parser.add_argument("source", help="/dev/videoN (camera, v4l2), a stream URL (rtsp://, rtmp://, http(s)://, "
                                       "udp://), - (video on stdin) or a video file")
    parser.add_argument("-o", "--output", required=True,
                        help="file written progressively (.mp4 = fragmented MP4, .ts = MPEG-TS), a URL to push to "
                             "(rtmp://, rtsp://, udp://, srt://) or - (MPEG-TS on stdout)")
    parser.add_argument("--weights", default="keep-v1", help="checkpoint path or registry name (default keep-v1)")
    add_device_arguments(parser, strict_fp32=False)
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for the network (default: PyTorch's choice; 1 is best on a busy machine)")
    parser.add_argument("--causal-window", type=int, default=None,
                        help="frames the gain's causal temporal attention spans (default: the network's, 8)")
    faces = parser.add_argument_group("faces")
    faces.add_argument("--aligned", action="store_true",
                       help="frames are aligned face crops: output the restored crop (no detection)")
    faces.add_argument("--detector", choices=["retinaface", "dlib"], default="retinaface",
                       help="face detector: retinaface (downloads weights once) or dlib (offline)")
    faces.add_argument("--all-faces", action="store_true", help="restore every face (default: the one near the centre)")
    faces.add_argument("--mask", choices=["auto", "parse", "square"], default="auto",
                       help="paste-back mask, as in keep restore")
    faces.add_argument("--smoothing", choices=["one-euro", "none"], default="one-euro",
                       help="causal landmark smoothing (default: One Euro filter)")
    faces.add_argument("--min-cutoff", type=float, default=1.0,
                       help="One Euro cutoff at rest in Hz (lower: steadier, more lag; default 1.0)")
    faces.add_argument("--beta", type=float, default=0.02,
                       help="One Euro cutoff increase per px/s of landmark speed (higher: less lag; default 0.02)")
    faces.add_argument("--d-cutoff", type=float, default=1.0, help="One Euro speed low-pass in Hz (default 1.0)")
    faces.add_argument("--max-hold", type=int, default=10,
                       help="frames a face without detection keeps its last landmarks before its track ends "
                            "(default 10)")
    faces.add_argument("--shots", type=parse_shots, default="auto", metavar="auto|off|FILE",
                       help="shot cuts end every face track so no landmark or network state crosses a cut: auto "
                            "(hard cuts found from past frames only; dissolves and fades need look-ahead, see "
                            "`keep restore --shots`; default), off, or a file listing the first frame of each new "
                            "shot, counted in frames read (dropped frames included), e.g. from PySceneDetect")
    faces.add_argument("--min-face", type=float, default=48.0,
                       help="faces whose aligned crop covers fewer source pixels (side) are left untouched "
                            "(default 48; 0 = every face)")
    timing = parser.add_argument_group("timing")
    timing.add_argument("--realtime", action="store_true",
                        help="replay a file at its own frame rate, as if it were a camera")
    timing.add_argument("--when-behind", choices=["drop", "wait"], default=None,
                        help="drop: skip frames to keep latency bounded (default for cameras, URLs, pipes and "
                             "--realtime); wait: restore every frame (default for files)")
    timing.add_argument("--max-latency", type=_number(float, "a number of seconds"), default=0.5,
                        help="seconds from capture to output beyond which queued frames are dropped (default 0.5)")
    timing.add_argument("--queue", type=int, default=None,
                        help="frames the input queue holds (default: max-latency x fps + 1)")
    timing.add_argument("--max-frames", type=int, default=None, help="stop after this many input frames")
    io = parser.add_argument_group("input / output")
    io.add_argument("--input-format", default=None,
                    help="force the demuxer (v4l2, rawvideo, mpegts, yuv4mpegpipe, avfoundation, dshow ...)")
    io.add_argument("--input-option", action="append", type=_key_value, default=[], metavar="KEY=VALUE",
                    help="demuxer option, repeatable (video_size=640x480, framerate=30, pixel_format=rgb24, "
                         "rtsp_transport=tcp ...)")
    io.add_argument("--crf", type=int, default=23, help="x264 quality (default 23)")
    io.add_argument("--preset", default="veryfast", help="x264 preset (default veryfast)")
    io.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    io.add_argument("--stats", type=Path, default=None,
                    help="write the run's figures (counts, per-frame latency) as JSON")
    io.add_argument("--no-progress", dest="progress", action="store_false", help="hide the progress bar")


def _validate(args: argparse.Namespace) -> None:
    if args.max_latency <= 0:
        raise InputError(f"--max-latency must be > 0 seconds, got {args.max_latency}")
    if args.queue is not None and args.queue < 1:
        raise InputError(f"--queue must be >= 1 frame, got {args.queue}")
    if args.max_frames is not None and args.max_frames < 1:
        raise InputError(f"--max-frames must be >= 1, got {args.max_frames}")
    if args.threads is not None and args.threads < 1:
        raise InputError(f"--threads must be >= 1, got {args.threads}")
    if args.min_face < 0:
        raise InputError(f"--min-face must be >= 0 pixels, got {args.min_face}")
    if args.causal_window is not None and args.causal_window < 1:
        raise InputError(f"--causal-window must be >= 1 frame, got {args.causal_window}")
    from keep.live.stream_io import source_kind
    if args.realtime and source_kind(args.source) != "file":
        raise InputError("--realtime replays a file; live sources (camera, URL, pipe) already run at their rate")
    if args.output == args.source and args.source != "-":
        raise InputError("the output must not be the input")
    from keep.live.stream_io import sink_format
    if sink_format(args.output)[1] == "file":
        from keep.io.outputs import refuse_overlap
        if source_kind(args.source) == "file":   # d/../d/c.mp4, links: compared resolved, not as text
            refuse_overlap([Path(args.source)], [Path(args.output)], fix="give another output file (-o)")
        if args.shots not in ("auto", "off"):   # the cut list is the user's: never written over
            refuse_overlap([Path(args.shots)], [Path(args.output)], fix="give another output file (-o)")
        if args.stats is not None:
            refuse_overlap([Path(args.source), Path(args.output)], [args.stats], fix="give another --stats file")
        if Path(args.output).exists() and not args.overwrite:
            raise InputError(f"{args.output} already exists; pass --overwrite to replace it")


def _lock_output(output: str):
    """One ``keep live`` per output file (keep/io/outputs.py); None for pipes and URLs."""
    from keep.io.outputs import MadeFolders, OutputLock
    from keep.live.stream_io import sink_format
    if sink_format(output)[1] != "file":
        return None
    MadeFolders(Path(output).parent).make()
    return OutputLock.beside(Path(output), "keep live").acquire()


def _write_failure(err: OSError, output: str) -> str:
    from keep.io.errors import write_error_message
    from keep.io.outputs import is_disk_full
    if is_disk_full(err):
        return (f"the disk is full ({err.strerror}) while writing {output}; the file holds the frames written "
                f"before (a live file is kept: it plays up to its last complete fragment); free some space")
    return write_error_message(err)


def _paste_mask(kind: str, device, notes):
    if kind == "square":
        return None
    from keep.face.parsing import ParseMasker
    from keep.weights import WeightsNotFoundError
    try:
        return ParseMasker(device, download=kind == "parse")
    except WeightsNotFoundError:
        if kind == "parse":
            raise
        notes.append("face parsing weights absent: feathered square mask used (`keep download parsenet`)")
        return None


def build_restorer(args: argparse.Namespace, notes):
    """The network and the per-frame face processing from the command line."""
    from keep.api import load_model
    from keep.face.paste import FacePaster
    from keep.live.faces import CausalNetwork, LiveFaceRestorer, SmoothingOptions
    from keep.restore.restorer import resolve_device

    if args.threads is not None:
        import torch
        torch.set_num_threads(args.threads)
    if args.backend == "torch":
        device = resolve_device(args.device)
        net = load_model(args.weights, device=device)
        if args.causal_window is not None:
            net.kalman_filter.window = args.causal_window
        network = CausalNetwork(net, device, args.precision)
    else:   # onnxruntime / OpenVINO run causal graphs of the same weights (keep/deploy)
        import torch
        from keep.deploy.network import load_network
        device = torch.device("cpu")
        net, note = load_network(args.weights, args.backend, args.device, args.precision, causal=True,
                                 causal_window=args.causal_window)
        notes.append(note)
        network = CausalNetwork(net, device)
    smoothing = SmoothingOptions(args.min_cutoff, args.beta, args.d_cutoff, args.max_hold,
                                 enabled=args.smoothing == "one-euro")
    if args.aligned:
        return LiveFaceRestorer(network, aligned=True, smoothing=smoothing, shots=args.shots)
    from keep.face.detect import make_detector
    return LiveFaceRestorer(network, detector=make_detector(args.detector, device),
                            paster=FacePaster(1, _paste_mask(args.mask, device, notes)), all_faces=args.all_faces,
                            smoothing=smoothing, shots=args.shots, min_face=args.min_face)


def main(args: argparse.Namespace) -> int:
    from keep.checkpoint import CheckpointError
    from keep.live.session import LiveSettings, run_session, write_json_atomic
    from keep.live.stream_io import LiveInput
    from keep.weights import WeightsNotFoundError

    expected = (InputError, WeightsNotFoundError, CheckpointError, FileNotFoundError, ValueError)
    log = sys.stderr if args.output == "-" else sys.stdout
    notes = []
    lock = None
    try:
        _validate(args)
        lock = _lock_output(args.output)
        source = LiveInput(args.source, args.input_format, dict(args.input_option))
    except expected as err:
        if lock is not None:
            lock.release()
        print(f"keep live: error: {err}", file=sys.stderr)
        return 1
    if lock is not None and lock.note:
        print(f"note: {lock.note}", file=sys.stderr)
    try:
        restorer = build_restorer(args, notes)
        live = source.kind != "file" or args.realtime
        settings = LiveSettings(realtime=args.realtime, when_behind=args.when_behind or ("drop" if live else "wait"),
                                max_latency=args.max_latency, queue=args.queue, max_frames=args.max_frames,
                                crf=args.crf, preset=args.preset, overwrite=args.overwrite, progress=args.progress)
        restorer.warm_up()
        summary = run_session(source, args.output, restorer.process,
                              restorer.output_size(source.width, source.height), settings)
    except expected as err:
        print(f"keep live: error: {err}", file=sys.stderr)
        return 1
    except OSError as err:   # the disk filled up, the output folder went away ...
        print(f"keep live: error: {_write_failure(err, args.output)}", file=sys.stderr)
        return 1
    finally:
        source.close()
        if lock is not None:
            lock.release()
    summary.notes = notes + ([source.note] if source.note else []) + summary.notes
    summary.notes.insert(0, f"when behind: {settings.when_behind}"
                         + (f" (max latency {settings.max_latency:g} s)" if settings.when_behind == "drop" else ""))
    if not args.aligned:
        summary.notes.append(f"{restorer.tracks_started} face track(s); {restorer.frames_without_face} frames "
                             f"without a face (written unchanged); {restorer.faces_held} faces from held landmarks")
        if restorer.small_faces:
            summary.notes.append(f"{restorer.small_faces} faces smaller than --min-face left untouched")
    if args.shots != "off":
        cuts = ", ".join(str(c) for c in restorer.cuts[:20]) + (", ..." if len(restorer.cuts) > 20 else "")
        summary.notes.append(f"{len(restorer.cuts) + 1} shot(s)" + (f"; cuts before frames {cuts}" if restorer.cuts
                                                                  else "; no cut found"))
        if restorer.late_cuts:
            late = ", ".join(f"{at} (reset at {reset})" for at, reset in restorer.late_cuts[:10])
            summary.notes.append(f"{len(restorer.late_cuts)} dissolve(s) or fade(s), known only once over: "
                                 f"new shot from frame {late}" + (", ..." if len(restorer.late_cuts) > 10 else ""))
    if summary.frames_written == 0:
        summary.notes.append("no frame was restored: the output holds no video")
    print(summary.describe(), file=log)
    if args.stats is not None:
        write_json_atomic(summary.to_json(), args.stats)
    return 1 if summary.ended.startswith("source error") else 0
