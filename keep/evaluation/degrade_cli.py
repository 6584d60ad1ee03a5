"""``keep degrade``: synthesise a VFHQ-mild / -medium / -heavy test split from GT clips.

For every GT clip (aligned 512×512 faces; a frame folder or a video) it draws one set of
degradation parameters from Table A1 with a seed derived from (level, clip name, --seed), applies
Eq. 9 (:mod:`keep.data.degradation`) and writes

    OUT/<clip>/00000000.png ...   LQ frames, 128×128 for 512 GT (lossless PNG)
    OUT/<clip>.json               level, seeds, sampled parameters and the full degradation config

``degrade_clip(gt_frames, DegradationParams(**record["params"]), level_config(level))`` regenerates a
clip from its record (``params.seed`` seeds the per-frame noise).

The JSON is written last, atomically: a clip with its JSON is done and is skipped on a re-run
(resumable); anything else is (re)generated. Same inputs and seed -> the same bytes.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from keep.config import to_dict
from keep.data.degradation import PAPER_ORDER, RELEASE_ORDER, degrade_clip, sample_params
from keep.evaluation.clips import list_clips, write_frames
from keep.io import read_frames
from keep.evaluation.levels import TABLE_A1, clip_seed, level_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--gt", required=True, type=Path,
                        help="folder of GT clips (per-clip frame folders or videos, aligned 512x512 faces)")
    parser.add_argument("--level", required=True, choices=list(TABLE_A1), help="Table A1 degradation level")
    parser.add_argument("-o", "--output", required=True, type=Path, help="output folder of LQ clips")
    parser.add_argument("--seed", type=int, default=0, help="base seed (per-clip seeds derive from it)")
    parser.add_argument("--order", choices=["paper", "release"], default="paper",
                        help="paper: blur, down, noise, codec (Eq. 9); release: blur, noise, down, noise, codec")
    parser.add_argument("--max-frames", type=int, default=None, help="use only the first N frames of each clip")


def degrade_split(gt: Path, level: str, output: Path, seed: int = 0, order: str = "paper",
                  max_frames=None) -> dict:
    """Build the split; returns {clip: record} of every clip in ``output`` (done now or before)."""
    cfg = level_config(level, PAPER_ORDER if order == "paper" else RELEASE_ORDER)
    clips = list_clips(gt)
    output.mkdir(parents=True, exist_ok=True)
    records = {}
    for name, path in tqdm(clips.items(), desc=f"degrade {level}", unit="clip"):
        meta = output / f"{name}.json"
        if meta.is_file() and (output / name).is_dir():
            records[name] = json.loads(meta.read_text())
            continue
        frames = read_frames(path, max_frames)
        if frames.shape[1] % cfg.scale or frames.shape[2] % cfg.scale:
            raise ValueError(f"clip {name}: frames are {frames.shape[2]}x{frames.shape[1]}, not divisible by "
                             f"{cfg.scale}; give aligned 512x512 GT faces")
        if frames.shape[1:3] != (512, 512):
            tqdm.write(f"warning: clip {name} is {frames.shape[2]}x{frames.shape[1]}, not the 512x512 of VFHQ")
        rng = np.random.default_rng(clip_seed(level, name, seed))
        params = sample_params(cfg, rng)
        # the noise gets its own recorded seed, so that degrade_clip(gt, params, cfg) alone regenerates the clip
        params.seed = int(rng.integers(2 ** 31))
        lq = degrade_clip(frames, params, cfg)
        write_frames(lq, output / name)
        record = {"clip": name, "level": level, "base_seed": seed, "clip_seed": clip_seed(level, name, seed),
                  "frames": int(len(lq)),
                  "gt": str(path), "params": params.to_dict(), "config": to_dict(cfg)}
        tmp = meta.with_name(f".{meta.name}.tmp")
        tmp.write_text(json.dumps(record, indent=2))
        os.replace(tmp, meta)
        records[name] = record
    return records


def main(args: argparse.Namespace) -> int:
    try:
        records = degrade_split(args.gt, args.level, args.output, args.seed, args.order, args.max_frames)
    except (FileNotFoundError, ValueError) as err:
        print(f"keep degrade: error: {err}", file=sys.stderr)
        return 2
    print(f"{len(records)} {args.level} clips in {args.output}")
    return 0
