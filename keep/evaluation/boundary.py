"""Window-boundary report: is a restored clip worse where ``keep restore`` starts a new window?

``keep restore`` runs the network on consecutive, non-overlapping windows of ``--window`` frames
(default 20), either carrying the Kalman state across them (our default) or starting each window
fresh (``--reset-state-per-window``, the release). Frame t (t ≥ 1) is a **boundary frame** when
t % window == 0: it is the first frame of a window and its flicker E_t compares it with the last frame
of the previous window. All other frames t ≥ 1 are **inside** frames. Frame 0 is in neither set
(it has no flicker, and both modes start it from nothing).

For each metric the report gives the mean over the boundary frames and over the inside frames of
all clips pooled (every frame weighs the same; NaN values, e.g. an empty occlusion mask, are left
out) and their ratio (boundary / inside). Temporal artefacts of a state reset show up as a flicker
ratio above 1 and, for PSNR, a lower boundary mean.
"""
from __future__ import annotations

from typing import Dict, Iterable

import numpy as np


def boundary_frames(n_frames: int, window: int) -> np.ndarray:
    """(n_frames,) bool: True at frames t >= 1 with t % window == 0 (first frames of windows 2, 3, ...)."""
    if window < 1:
        raise ValueError(f"window must be at least 1 frame, got {window}")
    t = np.arange(n_frames)
    return (t >= 1) & (t % window == 0)


def boundary_stats(per_clip: Iterable[np.ndarray], window: int) -> Dict[str, float]:
    """Per-frame values of several clips -> boundary / inside means, their ratio and the frame counts."""
    at, inside = [], []
    for values in per_clip:
        values = np.asarray(values, dtype=np.float64)
        mask = boundary_frames(len(values), window)
        rest = np.arange(len(values)) >= 1
        rest &= ~mask
        at.append(values[mask][~np.isnan(values[mask])])
        inside.append(values[rest][~np.isnan(values[rest])])
    at_all, inside_all = np.concatenate(at) if at else np.empty(0), np.concatenate(inside) if inside else np.empty(0)
    mean_at = float(np.mean(at_all)) if at_all.size else float("nan")
    mean_in = float(np.mean(inside_all)) if inside_all.size else float("nan")
    ratio = mean_at / mean_in if at_all.size and inside_all.size and mean_in != 0 else float("nan")
    return {"boundary": mean_at, "inside": mean_in, "ratio": ratio,
            "n_boundary": int(at_all.size), "n_inside": int(inside_all.size)}


def boundary_report(per_method: Dict[str, Dict[str, list]], window: int) -> Dict[str, Dict[str, dict]]:
    """{method: {column: [per-frame arrays, one per clip]}} -> {method: {column: boundary_stats}}."""
    return {method: {column: boundary_stats(curves, window) for column, curves in columns.items()}
            for method, columns in per_method.items()}


def boundary_markdown(report: Dict[str, Dict[str, dict]], window: int) -> str:
    """The report as a Markdown table: one row per method and metric that has both boundary and inside
    frames (a row without them would only print ``nan``); a sentence instead when no clip has any."""
    title = f"### Window boundaries (window {window}: boundary frames t = {window}, {2 * window}, ...)"
    rows = [(method, column, st) for method, columns in report.items() for column, st in columns.items()
            if st["n_boundary"] and st["n_inside"]]
    if not rows:
        return "\n".join([title, "", f"No clip is longer than {window} frames (or none has a value at its "
                                      f"boundary frames): no boundary frame to report."]) + "\n"
    lines = [title, "",
             "| Method | column | boundary mean | inside mean | boundary / inside | boundary frames | inside frames |",
             "|---|---|---|---|---|---|---|"]
    for method, column, st in rows:
        lines.append(f"| {method} | `{column}` | {st['boundary']:.6g} | {st['inside']:.6g} | {st['ratio']:.4f} | "
                     f"{st['n_boundary']} | {st['n_inside']} |")
    left_out = sum(len(columns) for columns in report.values()) - len(rows)
    if left_out:
        lines += ["", f"{left_out} method/column pair(s) left out: no value at a boundary frame or inside a window."]
    return "\n".join(lines) + "\n"
