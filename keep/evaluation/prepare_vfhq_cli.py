"""``keep prepare-vfhq``: VFHQ (unaligned clip frames + landmark annotations) -> aligned GT 512 / LQ 128.

Degrade, then align, as the release's test loader (``VideoRecurrentTestDataset`` with
``need_align``) and training loader do: each unaligned GT clip is degraded as one video under the
chosen protocol and Table A1 level (:mod:`keep.data.degradation`), then every GT frame and its LQ
frame are warped onto the FFHQ template with that frame's own landmarks (GT with the landmarks, LQ
with landmarks / 4; bilinear, grey border; not smoothed): :func:`keep.data.vfhq.align_pair`.

    OUT/GT/<clip>/00000000.png ...   aligned GT, 512x512  (keep eval --gt)
    OUT/LQ/<clip>/00000000.png ...   aligned LQ, 128x128  (keep restore --aligned)
    OUT/LQ/<clip>.json               level, protocol, codec frame rate, seeds, params, config, sources

``--dicface ROOT`` instead reads DicFace's VFHQ-Test-50 (its own degraded inputs, GT and landmarks)
and aligns those pairs the same way, without degrading anything.

Per clip: both folders are written under temporary names and renamed, the JSON last; a clip with
its JSON is done (resumable) if the JSON's settings equal the requested ones, and an output made
with other settings is refused before any work starts.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
from pathlib import Path
from typing import Dict, Iterator, Optional

import numpy as np
from tqdm import tqdm

from keep.config import to_dict
from keep.data.degradation import DEFAULT_PROTOCOL, PROTOCOLS, degrade_frames, sample_params
from keep.io.outputs import FrameFolderWriter, claimed_folder
from keep.data.vfhq import align_pair, check_inside, crop_to_multiple, list_dicface_clips, list_vfhq_clips
from keep.evaluation.degrade_cli import ORDERS, check_existing, check_writable, split_config
from keep.evaluation.levels import TABLE_A1, clip_seed
from keep.io import InputError, open_source, read_image
from keep.io.errors import write_error_message

ALIGNMENT = ("release pair alignment: GT warped with estimateAffinePartial2D(landmarks, FFHQ 512 template, LMEDS), "
             "LQ with landmarks / s onto template / s; bilinear, border (132, 133, 135) RGB; per-frame landmarks, "
             "not smoothed")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--frames", type=Path, help="VFHQ frames: FRAMES/<clip>/00000000.png ... (unaligned)")
    source.add_argument("--dicface", type=Path, metavar="ROOT",
                        help="DicFace's VFHQ-Test-50 tree (LR_Blind/, TEST_DATA/, vfhq_test_landmarks/): "
                             "align its own LQ/GT pairs, no degradation")
    parser.add_argument("--annotations", type=Path, help="VFHQ landmark annotations: ANNOTATIONS/<clip>.txt")
    parser.add_argument("-o", "--output", required=True, type=Path, help="output folder (GT/ and LQ/ inside)")
    parser.add_argument("--level", choices=list(TABLE_A1), help="Table A1 degradation level (with --frames)")
    parser.add_argument("--protocol", choices=sorted(PROTOCOLS), default=DEFAULT_PROTOCOL,
                        help="degradation protocol (default release; docs/protocol.md)")
    parser.add_argument("--order", choices=list(ORDERS), default=None, help="override the protocol's step order")
    parser.add_argument("--codec-fps", type=int, default=None, help="override the codec frame rate of the protocol")
    parser.add_argument("--seed", type=int, default=0, help="base seed (per-clip seeds derive from it)")
    parser.add_argument("--max-frames", type=int, default=None, help="only the first N frames of each clip")
    parser.add_argument("--clips", nargs="+", default=(), help="only these clips (names)")


def _read(path: Path) -> np.ndarray:
    return read_image(path)[0]


def _write_clip(output: Path, name: str, pairs: Iterator, record: Dict, total: int) -> int:
    """Write the aligned pairs of a clip atomically, the JSON last; returns the frame count."""
    gt_dir = FrameFolderWriter(output / "GT" / name, "keep prepare-vfhq")
    lq_dir = FrameFolderWriter(output / "LQ" / name, "keep prepare-vfhq")
    try:
        for gt, lq in tqdm(pairs, total=total, desc=name, unit="frame", leave=False):
            gt_dir.add(gt)
            lq_dir.add(lq)
        gt_dir.commit()
        lq_dir.commit()
    except BaseException:
        gt_dir.abort()
        lq_dir.abort()
        raise
    record["frames"] = lq_dir.count
    meta = output / "LQ" / f"{name}.json"
    tmp = meta.with_name(f".{meta.name}.tmp")
    tmp.write_text(json.dumps(record, indent=2))
    os.replace(tmp, meta)
    return lq_dir.count


def _done(output: Path, name: str) -> Optional[Dict]:
    meta = output / "LQ" / f"{name}.json"
    if meta.is_file() and (output / "GT" / name).is_dir() and (output / "LQ" / name).is_dir():
        try:
            return json.loads(meta.read_text())
        except ValueError:
            return None
    return None


def prepare_vfhq(frames: Path, annotations: Path, output: Path, level: str, protocol: str = DEFAULT_PROTOCOL,
                 seed: int = 0, order: Optional[str] = None, codec_fps: Optional[int] = None,
                 max_frames: Optional[int] = None, names=()) -> Dict[str, Dict]:
    """Degrade the unaligned VFHQ clips, then align GT and LQ per frame; returns {clip: record}."""
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"--max-frames must be >= 1, got {max_frames}")
    cfg = split_config(level, protocol, order, codec_fps)
    clips = list_vfhq_clips(frames, annotations, names)
    wanted = {"source": "vfhq", "level": level, "base_seed": seed, "max_frames": max_frames, "config": to_dict(cfg)}
    check_existing(output / "LQ", [c.name for c in clips], wanted)
    check_writable(output)
    multiple = 2 * cfg.scale   # the LQ side must be even for H.264 4:2:0
    records = {}
    for clip in tqdm(clips, desc=f"prepare-vfhq {level} ({cfg.protocol})", unit="clip"):
        done = _done(output, clip.name)
        if done is not None:
            records[clip.name] = done
            continue
        files = clip.frames[:max_frames]
        landmarks = clip.landmarks[:len(files)]
        first = _read(files[0])
        h, w = first.shape[:2]
        check_inside(landmarks, w, h, f"clip {clip.name}")
        rng = np.random.default_rng(clip_seed(level, clip.name, seed))
        params = sample_params(cfg, rng)
        params.seed = int(rng.integers(2 ** 31))
        lq = degrade_frames((crop_to_multiple(_read(f), multiple) for f in files), params, cfg)
        # the codec yields its first frame only once it has seen the whole clip: GT frames are read again
        pairs = (align_pair(crop_to_multiple(_read(f), multiple), small, lm)
                 for f, small, lm in zip(files, lq, landmarks))
        record = {"clip": clip.name, **wanted, "protocol": cfg.protocol, "codec_fps": cfg.fps,
                  "clip_seed": clip_seed(level, clip.name, seed), "params": params.to_dict(),
                  "gt": str(clip.frames[0].parent), "gt_size": [w, h],
                  "cropped_to": [w - w % multiple, h - h % multiple] if (h % multiple or w % multiple) else None,
                  "alignment": ALIGNMENT}
        _write_clip(output, clip.name, pairs, record, len(files))
        records[clip.name] = record
    return records


def _lq_frames(path: Path, count: int) -> Iterator[np.ndarray]:
    with open_source(path) as source:
        for frame in itertools.islice(source, count):
            yield frame.image


def prepare_dicface(root: Path, output: Path, max_frames: Optional[int] = None, names=()) -> Dict[str, Dict]:
    """Align DicFace's VFHQ-Test-50 pairs (its LQ inputs, its GT, its landmarks); returns {clip: record}."""
    clips = list_dicface_clips(root)
    if names:
        clips = [c for c in clips if c.name in set(names)]
        if not clips:
            raise FileNotFoundError(f"none of the clips {list(names)} is in {root}")
    wanted = {"source": "dicface", "max_frames": max_frames}
    check_existing(output / "LQ", [c.name for c in clips], wanted)
    check_writable(output)
    records = {}
    for clip in tqdm(clips, desc="prepare-vfhq dicface", unit="clip"):
        done = _done(output, clip.name)
        if done is not None:
            records[clip.name] = done
            continue
        files = clip.gt[:max_frames]
        first = _read(files[0])
        check_inside(clip.landmarks[:len(files)], first.shape[1], first.shape[0], f"clip {clip.name}")
        lq = list(_lq_frames(clip.lq, len(files)))   # LR frames (small) held for the count check
        if len(lq) != len(files):
            raise ValueError(f"clip {clip.name}: {len(lq)} LQ frames for {len(files)} GT frames")
        pairs = (align_pair(_read(f), small, lm) for f, small, lm in zip(files, lq, clip.landmarks))
        record = {"clip": clip.name, **wanted, "lq": str(clip.lq), "gt": str(files[0].parent),
                  "alignment": ALIGNMENT}
        _write_clip(output, clip.name, pairs, record, len(files))
        records[clip.name] = record
    return records


def main(args: argparse.Namespace) -> int:
    try:
        if args.dicface is None and (args.annotations is None or args.level is None):
            raise ValueError("--frames needs --annotations (the landmark files) and --level (mild|medium|heavy)")
        inputs = [p for p in (args.dicface, args.frames, args.annotations) if p is not None]
        with claimed_folder(args.output, "keep prepare-vfhq", inputs, [args.output / "GT", args.output / "LQ"]):
            if args.dicface is not None:
                records = prepare_dicface(args.dicface, args.output, args.max_frames, args.clips)
            else:
                records = prepare_vfhq(args.frames, args.annotations, args.output, args.level, args.protocol,
                                       args.seed, args.order, args.codec_fps, args.max_frames, args.clips)
    except (FileNotFoundError, InputError, ValueError) as err:
        print(f"keep prepare-vfhq: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"keep prepare-vfhq: error: {write_error_message(err)}", file=sys.stderr)
        return 1
    print(f"{len(records)} clips in {args.output} (GT/: aligned 512, LQ/: aligned inputs)")
    return 0
