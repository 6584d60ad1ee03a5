"""``keep degrade``: synthesise a VFHQ-mild / -medium / -heavy test split from GT clips.

For every GT clip (aligned 512×512 faces; a frame folder or a video) it draws one set of
degradation parameters from Table A1 with a seed derived from (level, clip name, --seed), applies
the degradation of the chosen protocol (:mod:`keep.data.degradation`; ``release`` by default, see
docs/protocol.md) and writes

    OUT/<clip>/00000000.png ...   LQ frames, 128×128 for 512 GT (lossless PNG)
    OUT/<clip>.json               level, protocol, codec frame rate, seeds, sampled parameters and the
                                  full degradation config

``degrade_clip(gt_frames, DegradationParams(**record["params"]), from_dict(DegradationConfig,
record["config"]))`` regenerates a clip from its record (``params.seed`` seeds the per-frame noise).

Clips are streamed (decode -> degrade -> encode -> decode -> PNG one frame at a time), so a long
clip needs no more memory than a short one. The JSON is written last, atomically: a clip with its
JSON is done and is skipped on a re-run (resumable), but only when the JSON's settings (level,
seed, protocol and every degradation setting, --max-frames) equal the requested ones; an output
folder that holds clips made otherwise is refused before any work starts. Same inputs and seed ->
the same bytes.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
from tqdm import tqdm

from keep.config import to_dict
from keep.data.degradation import (DEFAULT_PROTOCOL, PAPER_ORDER, PROTOCOLS, RELEASE_ORDER, DegradationConfig,
                                   degrade_frames, sample_params)
from keep.evaluation.clips import list_clips, write_frames
from keep.evaluation.levels import TABLE_A1, clip_seed, level_config
from keep.io import InputError, open_source
from keep.io.errors import write_error_message
from keep.io.outputs import claimed_folder, refuse_foreign, refuse_overlap

ORDERS = {"paper": PAPER_ORDER, "release": RELEASE_ORDER}


class SettingsMismatch(ValueError):
    """The output folder holds clips made with other settings than the ones requested."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--gt", required=True, type=Path,
                        help="folder of GT clips (per-clip frame folders or videos, aligned 512x512 faces)")
    parser.add_argument("--level", required=True, choices=list(TABLE_A1), help="Table A1 degradation level")
    parser.add_argument("-o", "--output", required=True, type=Path, help="output folder of LQ clips")
    parser.add_argument("--seed", type=int, default=0, help="base seed (per-clip seeds derive from it)")
    parser.add_argument("--protocol", choices=sorted(PROTOCOLS), default=DEFAULT_PROTOCOL,
                        help="release (default): the release's data code (blur, noise, down, noise, x264 at "
                             "rate 1); paper: Eq. 9 as printed (blur, down, noise, x264 at 25 fps). "
                             "See docs/protocol.md")
    parser.add_argument("--order", choices=list(ORDERS), default=None,
                        help="override the protocol's step order: paper (blur, down, noise, codec) or "
                             "release (blur, noise, down, noise, codec)")
    parser.add_argument("--codec-fps", type=int, default=None,
                        help="override the frame rate x264's rate control is given (release 1, paper 25); "
                             "the same CRF compresses harder at a higher rate")
    parser.add_argument("--max-frames", type=int, default=None, help="use only the first N frames of each clip")


def split_config(level: str, protocol: str = DEFAULT_PROTOCOL, order: Optional[str] = None,
                 codec_fps: Optional[int] = None) -> DegradationConfig:
    """The degradation config of a split: a Table A1 level under a protocol, with optional overrides."""
    return level_config(level, ORDERS[order] if order else None, protocol=protocol, fps=codec_fps)


def _settings(level: str, seed: int, max_frames: Optional[int], cfg: DegradationConfig) -> Dict:
    """What a clip's record must hold for the clip to count as done for this request."""
    return {"level": level, "base_seed": seed, "max_frames": max_frames, "config": to_dict(cfg)}


def _differences(record: Dict, wanted: Dict) -> List[str]:
    out = []
    for key, value in wanted.items():
        if key == "config":
            have = record.get("config", {})
            out += [f"{k}={have.get(k, '(absent)')!r} (asked {v!r})" for k, v in value.items() if have.get(k) != v]
        elif record.get(key, "(absent)") != value:
            out.append(f"{key}={record.get(key, '(absent)')!r} (asked {value!r})")
    return out


def _load_record(path: Path) -> Optional[Dict]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None   # unreadable: treated as not done (the clip is made again)


def check_existing(output: Path, names, wanted: Dict) -> None:
    """Refuse an output folder whose finished clips were made with other settings."""
    if not output.is_dir():
        return
    clashes = []
    for name in names:
        meta = output / f"{name}.json"
        record = _load_record(meta) if meta.is_file() else None
        if record is not None:
            diff = _differences(record, wanted)
            if diff:
                clashes.append(f"{name}: {', '.join(diff)}")
    if clashes:
        shown = "; ".join(clashes[:3]) + (f"; and {len(clashes) - 3} more" if len(clashes) > 3 else "")
        raise SettingsMismatch(f"{output} already holds {len(clashes)} clip(s) made with other settings ({shown}); "
                               f"give another -o, or delete those clips to remake them with these settings")


def check_writable(output: Path) -> None:
    """Fail before any work if ``output`` cannot be created or written (OSError with the reason)."""
    output.mkdir(parents=True, exist_ok=True)
    probe = output / f".keep-write-test-{os.getpid()}"
    probe.write_bytes(b"")
    probe.unlink()


def _gt_frames(path: Path, max_frames: Optional[int], name: str, scale: int, count: List[int]):
    """Frames of a GT clip, one at a time, with the size checks of the split."""
    with open_source(path) as source:
        info = source.info
        if info.height % scale or info.width % scale:
            raise ValueError(f"clip {name}: frames are {info.width}x{info.height}, not divisible by "
                             f"{scale}; give aligned 512x512 GT faces")
        if (info.height, info.width) != (512, 512):
            tqdm.write(f"warning: clip {name} is {info.width}x{info.height}, not the 512x512 of VFHQ")
        for frame in itertools.islice(source, max_frames):
            count[0] += 1
            yield frame.image


def degrade_split(gt: Path, level: str, output: Path, seed: int = 0, order: Optional[str] = None,
                  max_frames: Optional[int] = None, protocol: str = DEFAULT_PROTOCOL,
                  codec_fps: Optional[int] = None) -> dict:
    """Build the split; returns {clip: record} of every clip in ``output`` (done now or before)."""
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"--max-frames must be >= 1, got {max_frames}")
    cfg = split_config(level, protocol, order, codec_fps)
    for key, (value, preset) in cfg.deviations().items():
        tqdm.write(f"note: protocol {cfg.protocol} with {key}={value!r} (the protocol's own is {preset!r})")
    clips = list_clips(gt)
    wanted = _settings(level, seed, max_frames, cfg)
    # keep/io/outputs.py: -o is never the GT folder nor inside it; a clip folder left by this command
    # without its JSON (an interrupted run) is remade, a folder it did not make is never touched
    refuse_overlap([gt, *clips.values()], [p for n in clips for p in (output / n, output / f"{n}.json")],
                   root=output, fix="choose an -o outside the GT clips")
    check_existing(output, clips, wanted)
    todo = [n for n in clips if _done(output, n) is None]
    refuse_foreign([output / n for n in todo], "keep degrade")
    with claimed_folder(output, "keep degrade", [gt]):
        check_writable(output)
        return _degrade_clips(clips, todo, output, level, seed, cfg, wanted, max_frames)


def _done(output: Path, name: str) -> Optional[Dict]:
    meta = output / f"{name}.json"
    return _load_record(meta) if meta.is_file() and (output / name).is_dir() else None


def _degrade_clips(clips, todo, output: Path, level: str, seed: int, cfg: DegradationConfig, wanted: Dict,
                   max_frames: Optional[int]) -> dict:
    records = {}
    for name, path in tqdm(clips.items(), desc=f"degrade {level} ({cfg.protocol})", unit="clip"):
        meta = output / f"{name}.json"
        if name not in todo:
            records[name] = _done(output, name)
            continue
        rng = np.random.default_rng(clip_seed(level, name, seed))
        params = sample_params(cfg, rng)
        # the noise gets its own recorded seed, so that degrade_clip(gt, params, cfg) alone regenerates the clip
        params.seed = int(rng.integers(2 ** 31))
        count = [0]
        lq = degrade_frames(_gt_frames(path, max_frames, name, cfg.scale, count), params, cfg)
        write_frames(lq, output / name, command="keep degrade")
        record = {"clip": name, **wanted, "protocol": cfg.protocol, "codec_fps": cfg.fps,
                  "clip_seed": clip_seed(level, name, seed), "frames": count[0], "gt": str(path),
                  "params": params.to_dict()}
        tmp = meta.with_name(f".{meta.name}.tmp")
        tmp.write_text(json.dumps(record, indent=2))
        os.replace(tmp, meta)
        records[name] = record
    return records


def main(args: argparse.Namespace) -> int:
    try:
        records = degrade_split(args.gt, args.level, args.output, args.seed, args.order, args.max_frames,
                                args.protocol, args.codec_fps)
    except (FileNotFoundError, InputError, ValueError) as err:   # SettingsMismatch and ConfigError included
        print(f"keep degrade: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"keep degrade: error: {write_error_message(err)}", file=sys.stderr)
        return 1
    print(f"{len(records)} {args.level} clips ({args.protocol} protocol) in {args.output}")
    return 0
