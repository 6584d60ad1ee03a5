"""``keep prepare``: videos (or VFHQ clips with landmark files) -> the training layout (keep.data.prepare)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tqdm import tqdm

from keep.data.prepare import PrepareSettings, Preparer
from keep.io import InputError
from keep.io.errors import write_error_message

_DEFAULTS = PrepareSettings()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", nargs="?", type=Path,
                        help="a video, a frame folder, or a folder of videos / frame folders (in-the-wild)")
    parser.add_argument("--vfhq-frames", type=Path, help="VFHQ clips instead: FRAMES/<clip>/00000000.png ...")
    parser.add_argument("--vfhq-annotations", type=Path, help="VFHQ landmark files: ANNOTATIONS/<clip>.txt")
    parser.add_argument("-o", "--output", required=True, type=Path, help="dataset root to write (train/, val/ ...)")
    parser.add_argument("--detector", choices=["retinaface", "dlib"], default=_DEFAULTS.detector,
                        help="face detector (retinaface: needs its weights; dlib: offline)")
    parser.add_argument("--device", default="cpu", help="device of the detector (cpu, cuda)")
    parser.add_argument("--size", type=int, default=_DEFAULTS.size, help="side of the aligned crops (default 512)")
    parser.add_argument("--sigma", type=float, default=_DEFAULTS.sigma, help="landmark smoothing over time (5)")
    parser.add_argument("--max-gap", type=int, default=_DEFAULTS.max_gap,
                        help="frames without a detection bridged inside a track (20)")
    parser.add_argument("--min-frames", type=int, default=_DEFAULTS.min_frames, help="shortest segment kept (16)")
    parser.add_argument("--min-face", type=float, default=_DEFAULTS.min_face,
                        help="smallest face kept: side in source pixels of the square the crop covers (128)")
    parser.add_argument("--min-sharpness", type=float, default=_DEFAULTS.min_sharpness,
                        help="blurriest face kept: median Laplacian variance of the crop centre at 256 px (10)")
    parser.add_argument("--shots", choices=["auto", "off"], default=_DEFAULTS.shots,
                        help="shot boundaries (cuts, dissolves, fades; keep restore's detector) end every face "
                             "track, so no segment spans two shots (default auto)")
    parser.add_argument("--val-fraction", type=float, default=_DEFAULTS.val_fraction,
                        help="share of videos held out in val/ (by a hash of the name; default 0.2)")
    parser.add_argument("--val", nargs="+", default=(), help="put exactly these videos (names) in val/")
    parser.add_argument("--max-frames", type=int, default=None, help="only the first N frames of each video")


def main(args: argparse.Namespace) -> int:
    from keep.io.outputs import refuse_overlap
    from keep.weights import WeightsNotFoundError
    try:
        inputs = [p for p in (args.input, args.vfhq_frames, args.vfhq_annotations) if p is not None]
        sub = [args.output / d for d in ("train", "val", "crop_landmarks", "meta")]
        refuse_overlap(inputs, sub, root=args.output, fix="choose another output folder (-o)")   # before any model
        settings = PrepareSettings(detector=args.detector, size=args.size, sigma=args.sigma, max_gap=args.max_gap,
                                   min_frames=args.min_frames, min_face=args.min_face,
                                   min_sharpness=args.min_sharpness, shots=args.shots,
                                   max_frames=args.max_frames, val_fraction=args.val_fraction)
        if args.vfhq_frames is not None:
            from keep.data.vfhq import list_vfhq_clips
            if args.vfhq_annotations is None:
                raise ValueError("--vfhq-frames needs --vfhq-annotations (the landmark files)")
            if args.input is not None:
                raise ValueError("give either an input path or --vfhq-frames, not both")
            items = list_vfhq_clips(args.vfhq_frames, args.vfhq_annotations)
            preparer = Preparer(args.output, settings, val=args.val)
            run = preparer.prepare_vfhq
            names = [c.name for c in items]
        else:
            if args.input is None:
                raise ValueError("give a video, a frame folder or a folder of them (or --vfhq-frames)")
            from keep.io import find_inputs
            items = find_inputs(args.input)
            names = [p.stem if p.is_file() else p.name for p in items]
            if len(set(names)) != len(names):
                raise ValueError(f"two inputs share a name ({sorted(n for n in names if names.count(n) > 1)}); "
                                 f"their segments would collide: rename one")
            import torch
            from keep.face.detect import make_detector
            preparer = Preparer(args.output, settings, make_detector(args.detector, torch.device(args.device)),
                                val=args.val)
            run = preparer.prepare_video
        for name in names:                       # refuse a mismatch before any work
            preparer.done(name, "vfhq" if args.vfhq_frames is not None else "video")
        from keep.evaluation.degrade_cli import check_writable
        from keep.io.outputs import claimed_folder
        with claimed_folder(args.output, "keep prepare", inputs, sub):
            check_writable(args.output)
            records = [run(item) for item in tqdm(items, desc="prepare", unit="video")]
    except (FileNotFoundError, InputError, ValueError, WeightsNotFoundError) as err:
        print(f"keep prepare: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"keep prepare: error: {write_error_message(err)}", file=sys.stderr)
        return 1
    kept = sum(len(r["kept"]) for r in records)
    rejected = sum(len(r["rejected"]) for r in records)
    for split in ("train", "val"):
        segs = [s["name"] for r in records if r["split"] == split for s in r["kept"]]
        print(f"{split}: {len(segs)} segment(s) in {args.output / split}")
    print(f"{len(records)} input(s): {kept} segment(s) kept, {rejected} rejected (reasons in {args.output / 'meta'})")
    for record in records:
        if not record["kept"] and not record["rejected"]:
            print(f"warning: {record['video']}: no face found in any of its {record['frames']} frames; nothing "
                  f"was written for it (try --detector retinaface: dlib misses small and turned faces)",
                  file=sys.stderr)
    if kept == 0:   # an empty dataset is a failure, not a result (docs/training-data.md)
        print(f"keep prepare: error: no segment was kept, so {args.output} holds no training clip; see the "
              f"warnings above and the reasons in {args.output / 'meta'}", file=sys.stderr)
        return 1
    return 0
