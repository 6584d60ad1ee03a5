"""``keep eval``: the paper's metrics, tables and plots for one or more folders of restored clips.

    keep eval --pred results/keep results/codeformer --gt VFHQ-test/GT -o eval/mild \
        [--metrics psnr,ssim,lpips,ids,akd,sigma_ids,sigma_akd,psnr_y,ssim_y,flicker,fvd] [--plot-clips Clip1 Clip2]

Writes OUT/per_clip.csv, OUT/per_frame.csv, OUT/summary.md (also printed), OUT/metrics.json
(conventions, backends, settings, unavailable metrics, the window-boundary report; strict JSON) and
OUT/plots/. Works offline: a metric whose weights are absent is reported as unavailable with the file
to fetch, the others are computed; ``--require-backends`` turns that, and any offline substitute, into
an error before any clip is read.

Order of work: arguments, the output location (writable, not holding a previous run unless
``--overwrite``), the input clips (matched by name), then the metric networks, then the clips. The
outputs are written into a hidden staging folder inside OUT and moved into place at the end, so a
failed run leaves no half-written or stale files (and no OUT folder if it did not exist).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Dict, List

import numpy as np

from keep.evaluation.boundary import boundary_markdown, boundary_report
from keep.evaluation.evaluate import METRIC_NAMES, MetricOptions, build_metrics, evaluate_method, match_clips, \
    method_summary, parse_metric_names, probe_clips
from keep.evaluation.plots import plot_identity, plot_per_frame, plot_temporal_slices
from keep.evaluation.tables import summary_markdown, write_csvs, write_summary
from keep.io.outputs import MARKER, claimed_folder, is_owned, mark_owned, refuse_overlap

# what a run writes into OUT; an existing one means OUT holds a previous run
OUTPUTS = ("per_clip.csv", "per_frame.csv", "summary.md", "metrics.json", "plots")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pred", required=True, nargs="+", type=Path,
                        help="folder(s) of restored clips (per-clip frame folders or videos); one table row each")
    parser.add_argument("--gt", required=True, type=Path, help="folder of GT clips, named like the predictions")
    parser.add_argument("-o", "--output", required=True, type=Path, help="output folder")
    parser.add_argument("--overwrite", action="store_true", help="replace the outputs of a previous run in the output folder")
    parser.add_argument("--names", nargs="+", default=None, help="method names for the table (default: folder names)")
    parser.add_argument("--metrics", default=",".join(METRIC_NAMES),
                        help=f"comma-separated subset of {','.join(METRIC_NAMES)} (default: all)")
    parser.add_argument("--require-backends", action="store_true",
                        help="fail (before reading any clip) if a metric is unavailable or would run on an offline "
                             "substitute (dlib for ArcFace, Farneback for GMFlow): for numbers to compare with papers")
    parser.add_argument("--allow-name-mismatch", action="store_true",
                        help="score a lone prediction clip against a lone GT clip of another name")
    parser.add_argument("--plot-clips", nargs="*", default=[],
                        help="clips to plot (identity over time, temporal slice, per-frame PSNR / flicker)")
    parser.add_argument("--slice-column", type=int, default=None, help="pixel column of the temporal slice (default: centre)")
    parser.add_argument("--window", type=int, default=None,
                        help="frames per window of the restoration, for the window-boundary report and plots "
                             "(keep restore --window); default: the window keep restore recorded in the "
                             "prediction videos, else 20 (keep restore's default on a GPU; it uses 4 on the CPU)")
    parser.add_argument("--max-frames", type=int, default=None, help="evaluate only the first N frames of each clip")
    parser.add_argument("--crop-border", type=int, default=0, help="pixels shaved off each side for PSNR/SSIM")
    parser.add_argument("--lpips-net", choices=["alex", "vgg"], default="alex", help="LPIPS backbone (column lpips_NET)")
    parser.add_argument("--ids-backend", choices=["auto", "arcface", "dlib"], default="auto",
                        help="auto: ArcFace if its weights are present, else dlib (labelled)")
    parser.add_argument("--flow", choices=["auto", "gmflow", "farneback"], default="auto",
                        help="flow for the flicker metric; auto: GMFlow if its weights are present")
    parser.add_argument("--device", default="cpu", help="torch device for LPIPS / ArcFace / GMFlow / I3D")
    parser.add_argument("--title", default="", help="title line of summary.md, e.g. VFHQ-mild")
    parser.add_argument("--setting", action="append", default=[], metavar="KEY=VALUE",
                        help="a line for the summary's settings list (e.g. how the predictions were made); repeatable")


class UsageError(ValueError):
    """Bad arguments or inputs: exit 2 with the message."""


def _method_names(preds, names):
    if names:
        if len(names) != len(preds):
            raise UsageError(f"--names has {len(names)} entries for {len(preds)} --pred folders")
        return list(names)
    out = [p.resolve().name for p in preds]
    if len(set(out)) < len(out):   # e.g. two .../results folders: use parent/name
        out = [f"{p.resolve().parent.name}/{p.resolve().name}" for p in preds]
    return out


def check_output(out: Path, overwrite: bool, inputs: List[Path]) -> None:
    """Refuse an output location that cannot be written, lies inside an input, or holds a previous
    run (without ``overwrite``): before any work, and without creating anything."""
    refuse_overlap(inputs, [out / name for name in OUTPUTS], root=out,
                   fix="choose an output folder outside the inputs")
    if out.exists() and not out.is_dir():
        raise UsageError(f"-o {out} exists and is not a folder; give a folder")
    if out.is_dir():
        previous = [name for name in OUTPUTS if os.path.lexists(out / name)]
        if previous and not overwrite:
            raise UsageError(f"{out} already holds the results of a run ({', '.join(previous)}); "
                             f"pass --overwrite to replace them or choose another -o")
        if previous and not is_owned(out, "keep eval"):   # --overwrite replaces only keep eval's own files
            raise UsageError(f"{out} holds {', '.join(previous)} but not the {MARKER} marker keep eval writes, so "
                             f"they are not replaced, not even with --overwrite; move them or choose another -o")
    parent = out
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise UsageError(f"cannot create {out}: {parent} is a file, not a folder")
    try:   # a real probe: os.access says yes to root even on a read-only mount
        probe = tempfile.mkdtemp(prefix=".keep-eval-probe-", dir=parent)
        os.rmdir(probe)
    except OSError as err:
        raise UsageError(f"cannot write to {parent} ({err.strerror}); choose a writable -o") from err


def _finite_json(value, path: str, nulls: Dict[str, str]):
    """``value`` with NaN / ±inf replaced by None (strict JSON), recording why under ``nulls``."""
    if isinstance(value, dict):
        return {k: _finite_json(v, f"{path}.{k}" if path else str(k), nulls) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_json(v, f"{path}[{i}]", nulls) for i, v in enumerate(value)]
    if isinstance(value, (float, np.floating)):
        value = float(value)
        if math.isnan(value):
            nulls[path] = ("not a number: the metric is unavailable (see 'unavailable') or undefined for this input "
                           "(FVD needs >= 2 segments of 16 frames; a ratio needs a non-zero denominator)")
            return None
        if math.isinf(value):
            nulls[path] = f"{'+' if value > 0 else '-'}infinity: e.g. the PSNR of frames equal to their GT"
            return None
    return value


def strict_json(info: dict) -> str:
    """JSON text without NaN / Infinity; replaced values are listed with the reason in ``null_values``."""
    nulls: Dict[str, str] = {}
    clean = _finite_json(info, "", nulls)
    clean["null_values"] = nulls
    return json.dumps(clean, indent=2, default=str, allow_nan=False)


def _settings(args, methods, metrics) -> Dict[str, str]:
    out = {"gt": str(args.gt), **{f"method {m}": str(p) for m, p in zip(methods, args.pred)},
           "metrics": ", ".join(metrics.label(n) for n in metrics.requested),
           "max frames": str(args.max_frames) if args.max_frames else "all",
           "crop border (PSNR/SSIM)": str(args.crop_border),
           "window (boundary report)": f"{args.window} ({args.window_source})",
           "backends required": "yes" if args.require_backends else "no (substitutes allowed, marked †)",
           "device": args.device}
    for line in args.setting:
        key, _, value = line.partition("=")
        out[key.strip()] = value.strip()
    return out


def _restore_window(args: argparse.Namespace):
    """The window of the boundary report and where it came from: --window, else the one keep restore
    recorded in the prediction videos (keep/restore/window_tag.py), else keep restore's default on a GPU."""
    from keep.restore.progress import DEFAULT_WINDOW, default_window
    from keep.restore.window_tag import window_of_predictions
    if args.window is not None:
        return args.window, "--window"
    window, source = window_of_predictions(args.pred)
    if window is not None:
        return window, source
    # the restore's device is unknown here: the rule's GPU value, and a note for a CPU restore
    cpu = default_window("cpu")
    print(f"keep eval: note: {source}; the boundary report assumes {DEFAULT_WINDOW} (keep restore's default on "
          f"a GPU); if the predictions were restored on the CPU without --window, pass --window {cpu}",
          file=sys.stderr)
    return DEFAULT_WINDOW, f"assumed: {source}"


def main(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except UsageError as err:
        print(f"keep eval: error: {err}", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError) as err:
        print(f"keep eval: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        where = f" {err.filename}" if err.filename else ""
        print(f"keep eval: error: could not read or write{where}: {err.strerror or err}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace) -> int:
    names = parse_metric_names(args.metrics)
    methods = _method_names(args.pred, args.names)
    if args.window is not None and args.window < 1:
        raise UsageError(f"--window must be at least 1, got {args.window}")
    args.window, args.window_source = _restore_window(args)
    if args.max_frames is not None and args.max_frames < 1:
        raise UsageError(f"--max-frames must be at least 1, got {args.max_frames}")
    if args.crop_border < 0:
        raise UsageError(f"--crop-border must be >= 0, got {args.crop_border}")
    check_output(args.output, args.overwrite, [args.gt, *args.pred])
    with claimed_folder(args.output, "keep eval", [args.gt, *args.pred]):
        return _evaluate(args, names, methods)


def _evaluate(args: argparse.Namespace, names, methods) -> int:
    pairs = {m: match_clips(p, args.gt, args.allow_name_mismatch) for m, p in zip(methods, args.pred)}
    for clip_pairs in pairs.values():
        probe_clips(clip_pairs)
    opts = MetricOptions(args.crop_border, args.lpips_net, args.ids_backend, args.flow, args.device)
    metrics = build_metrics(names, opts)
    if args.require_backends:
        problems = [f"{n}: {msg}" for n, msg in metrics.unavailable.items()]
        problems += [f"{metrics.label(n)} is an offline substitute" for n in metrics.substitutes()]
        if problems:
            raise UsageError("--require-backends: " + "; ".join(problems))
    for base, message in metrics.unavailable.items():
        print(f"keep eval: {base} unavailable: {message}", file=sys.stderr)
    results = {m: evaluate_method(pairs[m], metrics, args.max_frames, args.plot_clips, args.slice_column,
                                  desc=f"eval {m}") for m in methods}

    report = boundary_report(_per_frame_columns(results, metrics), args.window)
    settings = _settings(args, methods, metrics)
    text = summary_markdown(results, metrics, args.title, settings, boundary_markdown(report, args.window))
    info = {"metrics": {n: {"column": metrics.label(n), "backbone": metrics.backbone(n), "convention": c}
                        for n, c in metrics.conventions().items()},
            "unavailable": metrics.unavailable, "settings": settings,
            "methods": {m: str(p) for m, p in zip(methods, args.pred)}, "gt": str(args.gt),
            "summary": {m: {metrics.label(n): v for n, v in method_summary(r, names).items()}
                        for m, r in results.items()},
            "window_boundaries": {"window": args.window, "report": report}}
    _write_outputs(args.output, results, metrics, text, strict_json(info), args)
    print(text)
    return 0


def _per_frame_columns(results, metrics) -> Dict[str, Dict[str, list]]:
    """{method: {column: [per-frame arrays of its clips]}} for PSNR and flicker (what the report covers)."""
    keys = [k for k in ("psnr", "flicker") if k in metrics.frame_metrics]
    return {m: {metrics.label(k): [r.frames[k] for r in rs] for k in keys} for m, rs in results.items()}


def _write_outputs(out: Path, results, metrics, text: str, info_json: str, args) -> None:
    """Write everything into OUT/.keep-eval-staging, then replace the previous run's files by them (all of
    them: a file the new run does not write goes too); OUT gets keep eval's marker (keep/io/outputs.py)."""
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".keep-eval-staging-", dir=out))
    try:
        write_csvs(staging, results, metrics)
        write_summary(staging, text)
        (staging / "metrics.json").write_text(info_json, encoding="utf-8")
        _plots(staging, results, metrics, args.plot_clips, args.window)
        for name in OUTPUTS:
            old, new = out / name, staging / name
            if old.is_dir() and not old.is_symlink():
                shutil.rmtree(old)
            elif old.exists() or old.is_symlink():
                old.unlink()
            if new.exists():
                os.replace(new, old)
        mark_owned(out, "keep eval")
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _plots(out: Path, results, metrics, clips, window: int) -> None:
    plots = out / "plots"
    curves = _per_frame_columns(results, metrics)
    if any(curves.values()):
        plots.mkdir(exist_ok=True)
        mean_curves = {m: {c: _mean_over_clips(v) for c, v in cols.items()} for m, cols in curves.items()}
        plot_per_frame(mean_curves, plots / "per_frame_mean.png", "per-frame values, mean over clips", window)
    for clip in clips:
        per_method = {m: next((r for r in rs if r.clip == clip), None) for m, rs in results.items()}
        found = {m: r for m, r in per_method.items() if r is not None}
        if not found:
            print(f"keep eval: warning: --plot-clips {clip}: no such clip", file=sys.stderr)
            continue
        plots.mkdir(exist_ok=True)
        if "ids" in metrics.metrics:
            plot_identity({m: r.frames["ids"] for m, r in found.items()}, plots / f"{clip}_identity.png", clip,
                          metrics.label("ids"))
        first = next(iter(found.values()))
        slices = {"GT": first.slices["gt"], **{m: r.slices["pred"] for m, r in found.items()}}
        plot_temporal_slices(slices, plots / f"{clip}_slice.png", clip, first.slice_column)
        keys = [k for k in ("psnr", "flicker") if k in metrics.frame_metrics]
        if keys:
            plot_per_frame({m: {metrics.label(k): r.frames[k] for k in keys} for m, r in found.items()},
                           plots / f"{clip}_per_frame.png", f"{clip}: per-frame values", window)


def _mean_over_clips(curves: list) -> np.ndarray:
    """Frame-wise mean of per-frame curves of different lengths (clips aligned at frame 0; NaN/inf skipped)."""
    length = max(len(c) for c in curves)
    stack = np.full((len(curves), length), np.nan)
    for i, c in enumerate(curves):
        stack[i, :len(c)] = np.where(np.isfinite(c), c, np.nan)
    with np.errstate(all="ignore"):
        counts = np.sum(~np.isnan(stack), 0)
        return np.where(counts > 0, np.nansum(stack, 0) / np.maximum(counts, 1), np.nan)
