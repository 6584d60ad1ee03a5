"""CSV files and the summary table in the layout of the paper's Table 1 / A2.

* ``per_frame.csv``: ``clip, frame`` and one column per frame metric;
* ``per_clip.csv``: ``clip`` and one column per requested metric (clip values);
* with several methods both files gain a ``method`` first column (one row per method and clip);
* ``summary.md``: one row per method, the paper's columns (PSNR↑ SSIM↑ LPIPS↓ IDS↑ AKD↓
  σ_IDS(×10⁻²)↓ σ_AKD↓) then PSNR-Y↑ SSIM-Y↑, E_warp (×10⁻³)↓ and FVD↓, 4 decimals; the network
  or detector behind a column is named in its header; a column computed with an offline substitute
  is marked † and explained under the table; an unavailable one reads ``n/a`` with the file to fetch;
  the settings of the run (``settings``) are listed under the table.

Columns are named by :meth:`MetricSet.label` (``lpips_alex``, ``ids_arcface_r18``, ``ids_dlib``,
``akd_dlib``, ``ewarp_gmflow``, ``ewarp_farneback``), so every CSV says which backend produced it.
"""
from __future__ import annotations

import csv
import math
import os
from pathlib import Path
from typing import Dict, List, Sequence

from keep.evaluation.evaluate import SUBSTITUTE_SUFFIXES as _SUBSTITUTE_SUFFIXES
from keep.evaluation.evaluate import ClipResult, MetricSet, base_metric, method_summary

# metric -> (table header, scale applied in the table)
HEADERS = {
    "psnr": ("PSNR↑", 1.0), "ssim": ("SSIM↑", 1.0), "lpips": ("LPIPS↓", 1.0), "ids": ("IDS↑", 1.0),
    "akd": ("AKD↓", 1.0), "sigma_ids": ("σ_IDS(×10⁻²)↓", 100.0), "sigma_akd": ("σ_AKD↓", 1.0),
    "psnr_y": ("PSNR-Y↑", 1.0), "ssim_y": ("SSIM-Y↑", 1.0),
    "flicker": ("E_warp(×10⁻³)↓", 1000.0), "fvd": ("FVD↓", 1.0),
}
# short backbone names for the table header (the conventions under the table give the full names)
_SHORT = {"lpips": {"lpips_alex": "Alex", "lpips_vgg": "VGG"},
          "ids": {"ids_arcface_r18": "ArcFace-R18", "ids_dlib": "dlib"},
          "akd": {"akd_dlib": "dlib-68"},
          "flicker": {"ewarp_gmflow": "GMFlow", "ewarp_farneback": "Farneback"},
          "fvd": {"fvd": "I3D-K400"}}


def header(name: str, metrics: MetricSet) -> str:
    """Table header of a metric: name, arrow, the backbone in brackets, † for a substitute."""
    text = HEADERS[name][0]
    short = _SHORT.get(base_metric(name), {}).get(metrics.label(base_metric(name)))
    if short:
        text += f" [{short}]"
    return text + ("†" if metrics.label(name).endswith(_SUBSTITUTE_SUFFIXES) else "")


def _fmt(value: float) -> str:
    if math.isnan(value):
        return ""
    return "inf" if math.isinf(value) else f"{value:.6g}" if abs(value) < 1e-3 and value else f"{value:.6f}"


def _cell(value: float, scale: float, unavailable: bool) -> str:
    if unavailable:
        return "n/a"
    if math.isnan(value):
        return "-"
    return "inf" if math.isinf(value) else f"{value * scale:.4f}"


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _csv_text(header: List[str], rows: List[List[str]]) -> str:
    from io import StringIO
    buf = StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


def write_csvs(out: Path, results: Dict[str, Sequence[ClipResult]], metrics: MetricSet) -> None:
    """``out/per_clip.csv`` and ``out/per_frame.csv`` for {method: clip results}."""
    multi = len(results) > 1
    lead = ["method"] if multi else []
    names = metrics.requested
    frame_keys = list(metrics.frame_metrics)
    clip_rows, frame_rows = [], []
    for method, clips in results.items():
        for r in clips:
            head = [method] if multi else []
            clip_rows.append(head + [r.clip] + [_fmt(r.summary[n]) for n in names])
            length = len(next(iter(r.frames.values()))) if r.frames else 0
            for t in range(length):
                frame_rows.append(head + [r.clip, str(t)] + [_fmt(float(r.frames[k][t])) for k in frame_keys])
    _atomic_write(out / "per_clip.csv", _csv_text(lead + ["clip"] + [metrics.label(n) for n in names], clip_rows))
    _atomic_write(out / "per_frame.csv",
                  _csv_text(lead + ["clip", "frame"] + [metrics.label(k) for k in frame_keys], frame_rows))


def summary_markdown(results: Dict[str, Sequence[ClipResult]], metrics: MetricSet, title: str = "",
                     settings: Dict[str, str] = None, extra: str = "") -> str:
    """The table (one row per method), its conventions and the run's ``settings``, as Markdown;
    ``extra`` (e.g. the window-boundary report) is appended."""
    names = metrics.requested
    headers = [header(n, metrics) for n in names]
    lines = [f"## {title}", ""] if title else []
    lines += ["| Method | " + " | ".join(headers) + " |", "|---|" + "---|" * len(names)]
    for method, clips in results.items():
        summary = method_summary(clips, names)
        cells = [_cell(summary[n], HEADERS[n][1], {"sigma_ids": "ids", "sigma_akd": "akd"}.get(n, n)
                       in metrics.unavailable) for n in names]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    clip_counts = {m: len(c) for m, c in results.items()}
    lines += ["", f"Clips per method: {', '.join(f'{m}: {k}' for m, k in clip_counts.items())}. "
              "Values are means over clips of per-clip means (σ: per-clip std over frames).", ""]
    lines.append("Conventions:")
    for n, text in metrics.conventions().items():
        mark = "†" if metrics.label(n).endswith(_SUBSTITUTE_SUFFIXES) else ""
        lines.append(f"- {HEADERS[n][0]}{mark} (`{metrics.label(n)}`): {text}")
    if any(metrics.label(n).endswith(_SUBSTITUTE_SUFFIXES) for n in names):
        lines.append("")
        lines.append("† computed with an offline substitute backend; not comparable with the paper's numbers.")
    if any(math.isinf(v) for clips in results.values() for v in method_summary(clips, names).values()):
        lines.append("")
        lines.append("inf: a restored clip equal to its GT in every frame (PSNR of identical frames is infinite).")
    if settings:
        lines += ["", "Settings:"] + [f"- {key}: {value}" for key, value in settings.items()]
    text = "\n".join(lines) + "\n"
    return text + ("\n" + extra if extra else "")


def write_summary(out: Path, text: str) -> None:
    _atomic_write(out / "summary.md", text)
