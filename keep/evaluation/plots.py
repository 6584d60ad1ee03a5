"""Figures of the paper, per clip, written with matplotlib's Agg backend (no display needed).

* identity similarity over frames (as Fig. 7): per-frame IDS of every method against the GT;
* temporal slice (as Fig. 5): one pixel column of every frame, stacked left to right over time, for
  the GT and every method; flicker shows up as vertical streaks, stable restorations as smooth bands;
* per-frame PSNR and flicker against the frame index, with the restore windows' boundaries marked
  (a state reset at a boundary shows up as a spike there).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)
import numpy as np  # noqa: E402


def _save(fig, path: Path) -> None:
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    fig.savefig(tmp, dpi=120, bbox_inches="tight")
    plt.close(fig)
    os.replace(tmp, path)


def plot_identity(curves: Dict[str, np.ndarray], path: Path, clip: str, label: str = "ids") -> None:
    """curves: method -> (T,) per-frame identity similarity. Writes a line plot to ``path``."""
    fig, ax = plt.subplots(figsize=(7, 3.2))
    for method, values in curves.items():
        ax.plot(np.arange(len(values)), values, label=method, linewidth=1.2)
    ax.set_xlabel("frame")
    ax.set_ylabel("identity similarity" + (" (dlib substitute)" if label.endswith("_dlib") else " (ArcFace)"))
    ax.set_title(f"{clip}: identity similarity to GT over time")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)


def plot_temporal_slices(slices: Dict[str, np.ndarray], path: Path, clip: str, column: int) -> None:
    """slices: name (GT first) -> (H, T, 3) uint8, one pixel column per frame. Writes the panels."""
    fig, axes = plt.subplots(1, len(slices), figsize=(2.2 * len(slices) + 1, 4), squeeze=False)
    for ax, (name, image) in zip(axes[0], slices.items()):
        ax.imshow(image, aspect="auto", interpolation="nearest")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("frame")
        ax.set_yticks([])
    axes[0][0].set_ylabel(f"rows of column x={column}")
    fig.suptitle(f"{clip}: temporal slice")
    _save(fig, path)


def plot_per_frame(curves: Dict[str, Dict[str, np.ndarray]], path: Path, title: str, window: int = 0) -> None:
    """curves: method -> {column: (T,) per-frame values}; one panel per column (e.g. ``psnr``,
    ``ewarp_gmflow``), one line per method, dashed lines at t = window, 2 window, ... Writes ``path``."""
    columns = list(dict.fromkeys(c for per_method in curves.values() for c in per_method))
    if not columns:
        return
    fig, axes = plt.subplots(len(columns), 1, figsize=(8, 2.6 * len(columns)), squeeze=False, sharex=True)
    length = max(len(v) for per_method in curves.values() for v in per_method.values())
    for ax, column in zip(axes[:, 0], columns):
        for method, per_method in curves.items():
            if column in per_method:
                values = per_method[column]
                ax.plot(np.arange(len(values)), values, label=method, linewidth=1.0)
        if window and window < length:
            for t in range(window, length, window):
                ax.axvline(t, color="grey", linestyle="--", linewidth=0.6, alpha=0.7)
        ax.set_ylabel(column)
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    axes[-1, 0].set_xlabel("frame" + (f" (dashed: window boundaries, window {window})" if window else ""))
    fig.suptitle(title)
    _save(fig, path)
