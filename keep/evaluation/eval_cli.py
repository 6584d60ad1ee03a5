"""``keep eval``: the paper's metrics, tables and plots for one or more folders of restored clips.

    keep eval --pred results/keep results/codeformer --gt VFHQ-test/GT -o eval/mild \
        [--metrics psnr,ssim,lpips,ids,akd,sigma_ids,sigma_akd,flicker] [--plot-clips Clip1 Clip2]

Writes OUT/per_clip.csv, OUT/per_frame.csv, OUT/summary.md (also printed), OUT/metrics.json
(conventions, backends and unavailable metrics) and OUT/plots/. Works offline: a metric whose
weights are absent is reported as unavailable with the file to fetch, the others are computed.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from keep.evaluation.evaluate import METRIC_NAMES, MetricOptions, build_metrics, evaluate_method, \
    method_summary, parse_metric_names
from keep.evaluation.plots import plot_identity, plot_temporal_slices
from keep.evaluation.tables import summary_markdown, write_csvs, write_summary


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pred", required=True, nargs="+", type=Path,
                        help="folder(s) of restored clips (per-clip frame folders or videos); one table row each")
    parser.add_argument("--gt", required=True, type=Path, help="folder of GT clips, named like the predictions")
    parser.add_argument("-o", "--output", required=True, type=Path, help="output folder")
    parser.add_argument("--names", nargs="+", default=None, help="method names for the table (default: folder names)")
    parser.add_argument("--metrics", default=",".join(METRIC_NAMES),
                        help=f"comma-separated subset of {','.join(METRIC_NAMES)} (default: all)")
    parser.add_argument("--plot-clips", nargs="*", default=[], help="clips to plot (identity over time, temporal slice)")
    parser.add_argument("--slice-column", type=int, default=None, help="pixel column of the temporal slice (default: centre)")
    parser.add_argument("--max-frames", type=int, default=None, help="evaluate only the first N frames of each clip")
    parser.add_argument("--y-channel", action="store_true", help="PSNR/SSIM on BT.601 luma instead of RGB")
    parser.add_argument("--crop-border", type=int, default=0, help="pixels shaved off each side for PSNR/SSIM")
    parser.add_argument("--lpips-net", choices=["alex", "vgg"], default="alex", help="LPIPS backbone")
    parser.add_argument("--ids-backend", choices=["auto", "arcface", "dlib"], default="auto",
                        help="auto: ArcFace if its weights are present, else dlib (labelled)")
    parser.add_argument("--flow", choices=["auto", "gmflow", "farneback"], default="auto",
                        help="flow for the flicker metric; auto: GMFlow if its weights are present")
    parser.add_argument("--device", default="cpu", help="torch device for LPIPS / ArcFace / GMFlow")
    parser.add_argument("--title", default="", help="title line of summary.md, e.g. VFHQ-mild")


def _method_names(preds, names):
    if names:
        if len(names) != len(preds):
            raise ValueError(f"--names has {len(names)} entries for {len(preds)} --pred folders")
        return list(names)
    out = [p.resolve().name for p in preds]
    if len(set(out)) < len(out):   # e.g. two .../results folders: use parent/name
        out = [f"{p.resolve().parent.name}/{p.resolve().name}" for p in preds]
    return out


def main(args: argparse.Namespace) -> int:
    try:
        names = parse_metric_names(args.metrics)
        methods = _method_names(args.pred, args.names)
        opts = MetricOptions(args.y_channel, args.crop_border, args.lpips_net, args.ids_backend, args.flow, args.device)
        metrics = build_metrics(names, opts)
        for base, message in metrics.unavailable.items():
            print(f"keep eval: {base} unavailable: {message}", file=sys.stderr)
        results = {}
        for method, pred in zip(methods, args.pred):
            results[method] = evaluate_method(pred, args.gt, metrics, args.max_frames, args.plot_clips,
                                              args.slice_column, desc=f"eval {method}")
    except (FileNotFoundError, ValueError) as err:
        print(f"keep eval: error: {err}", file=sys.stderr)
        return 2
    out = args.output
    out.mkdir(parents=True, exist_ok=True)
    write_csvs(out, results, metrics)
    text = summary_markdown(results, metrics, args.title)
    write_summary(out, text)
    info = {"metrics": {n: {"column": metrics.label(n), "convention": c} for n, c in metrics.conventions().items()},
            "unavailable": metrics.unavailable, "methods": {m: str(p) for m, p in zip(methods, args.pred)},
            "gt": str(args.gt), "summary": {m: method_summary(r, names) for m, r in results.items()}}
    tmp = out / ".metrics.json.tmp"
    tmp.write_text(json.dumps(info, indent=2, default=str))
    os.replace(tmp, out / "metrics.json")
    _plots(out, results, metrics, args.plot_clips)
    print(text)
    return 0


def _plots(out: Path, results, metrics, clips) -> None:
    if not clips:
        return
    plots = out / "plots"
    plots.mkdir(exist_ok=True)
    for clip in clips:
        per_method = {m: next((r for r in rs if r.clip == clip), None) for m, rs in results.items()}
        found = {m: r for m, r in per_method.items() if r is not None}
        if not found:
            print(f"keep eval: warning: --plot-clips {clip}: no such clip", file=sys.stderr)
            continue
        if "ids" in metrics.metrics:
            plot_identity({m: r.frames["ids"] for m, r in found.items()}, plots / f"{clip}_identity.png", clip,
                          metrics.label("ids"))
        first = next(iter(found.values()))
        slices = {"GT": first.slices["gt"], **{m: r.slices["pred"] for m, r in found.items()}}
        plot_temporal_slices(slices, plots / f"{clip}_slice.png", clip, first.slice_column)
