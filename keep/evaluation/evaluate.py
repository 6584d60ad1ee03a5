"""Compute the paper's metrics for restored clips against their ground truth.

Aggregation (as the paper's tables): a clip's value is the mean of its per-frame values; σ_IDS and
σ_AKD are the standard deviations (ddof 0) of a clip's per-frame IDS / AKD; a method's value is the
mean of its clips' values (every clip weighs the same, whatever its length).

Frame counts of a prediction and its GT must match. A prediction of another size is resized to the
GT size (bicubic) with a warning, so e.g. the 128×128 LQ input itself can be scored as a baseline.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import cv2
import numpy as np
from tqdm import tqdm

from keep.evaluation.clips import list_clips
from keep.io import read_frames
from keep.metrics.errors import MetricUnavailable

# Order of the paper's table (Table 1 / A2), then ours.
METRIC_NAMES = ("psnr", "ssim", "lpips", "ids", "akd", "sigma_ids", "sigma_akd", "flicker")
_NEEDS = {"sigma_ids": "ids", "sigma_akd": "akd"}


@dataclass
class MetricOptions:
    """Backend choices of the metrics (see each metric module for the conventions)."""
    y_channel: bool = False
    crop_border: int = 0
    lpips_net: str = "alex"
    ids_backend: str = "auto"
    flow_backend: str = "auto"
    device: str = "cpu"


@dataclass
class MetricSet:
    """The frame metrics that could be built, and why the others could not."""
    metrics: Dict[str, object] = field(default_factory=dict)     # name -> callable (pred, gt) -> (T,)
    unavailable: Dict[str, str] = field(default_factory=dict)    # name -> message
    requested: List[str] = field(default_factory=list)

    def label(self, name: str) -> str:
        """CSV column of a metric: its name, suffixed with the backend when an offline substitute runs."""
        if name in _NEEDS:
            base = _NEEDS[name]
            return "sigma_" + (self.metrics[base].label if base in self.metrics else base)
        return self.metrics[name].label if name in self.metrics else name

    def conventions(self) -> Dict[str, str]:
        out = {}
        for name in self.requested:
            base = _NEEDS.get(name, name)
            if base in self.unavailable:
                out[name] = f"UNAVAILABLE: {self.unavailable[base]}"
            else:
                out[name] = getattr(self.metrics[base], "convention", "") + (
                    ", std over frames" if name in _NEEDS else "")
        return out


def parse_metric_names(text: str) -> List[str]:
    names = [n.strip().lower() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in METRIC_NAMES]
    if unknown or not names:
        raise ValueError(f"unknown metric(s) {unknown or text!r}; choose from {', '.join(METRIC_NAMES)}")
    return [n for n in METRIC_NAMES if n in names]


def build_metrics(names: Sequence[str], opts: MetricOptions) -> MetricSet:
    """Instantiate the frame metrics behind ``names``; a metric whose files are absent is recorded as
    unavailable (with what to fetch) instead of failing the run."""
    from keep.metrics.flicker import FlowWarpingError
    from keep.metrics.identity import IdentitySimilarity
    from keep.metrics.landmarks import KeypointDistance
    from keep.metrics.lpips_metric import LPIPSMetric
    from keep.metrics.psnr_ssim import PSNR, SSIM

    factories = {
        "psnr": lambda: PSNR(opts.crop_border, opts.y_channel),
        "ssim": lambda: SSIM(opts.crop_border, opts.y_channel),
        "lpips": lambda: LPIPSMetric(opts.lpips_net, opts.device),
        "ids": lambda: IdentitySimilarity(opts.ids_backend, opts.device),
        "akd": lambda: KeypointDistance(),
        "flicker": lambda: FlowWarpingError(opts.flow_backend, opts.device),
    }
    out = MetricSet(requested=list(names))
    for base in dict.fromkeys(_NEEDS.get(n, n) for n in names):
        try:
            out.metrics[base] = factories[base]()
        except MetricUnavailable as err:
            out.unavailable[base] = str(err)
    return out


@dataclass
class ClipResult:
    clip: str
    frames: Dict[str, np.ndarray]            # frame metric name -> (T,)
    summary: Dict[str, float]                # requested metric name -> clip value
    slices: Optional[Dict[str, np.ndarray]] = None   # "pred"/"gt" -> (H, T, 3) column over time
    slice_column: Optional[int] = None


def clip_summary(frames: Dict[str, np.ndarray], names: Sequence[str]) -> Dict[str, float]:
    """Per-frame values -> the clip's value of every requested metric (NaN where unavailable)."""
    out = {}
    for name in names:
        if name in _NEEDS:
            values = frames.get(_NEEDS[name])
            out[name] = float(np.std(values)) if values is not None else float("nan")
        else:
            values = frames.get(name)
            kept = values[~np.isnan(values)] if values is not None else np.empty(0)
            # identical frames give PSNR inf, and so does their mean, as BasicSR reports it
            out[name] = float(np.mean(kept)) if kept.size else float("nan")
    return out


def match_clips(pred_root: Path, gt_root: Path) -> Dict[str, tuple]:
    """{clip: (pred path, gt path)} for every GT clip; error if a GT clip has no prediction."""
    gt_clips, pred_clips = list_clips(gt_root), list_clips(pred_root)
    if len(gt_clips) == 1 and len(pred_clips) == 1:   # two single-clip folders: compare them directly
        return {next(iter(gt_clips)): (next(iter(pred_clips.values())), next(iter(gt_clips.values())))}
    missing = [c for c in gt_clips if c not in pred_clips]
    if missing:
        raise ValueError(f"{pred_root} has no prediction for GT clip(s) {', '.join(missing[:5])}"
                         f"{' ...' if len(missing) > 5 else ''} (found: {', '.join(list(pred_clips)[:5])}); "
                         f"restore every GT clip, named like the GT")
    return {c: (pred_clips[c], gt_clips[c]) for c in gt_clips}


def evaluate_clip(pred: np.ndarray, gt: np.ndarray, name: str, metrics: MetricSet,
                  slice_column: Optional[int] = None) -> ClipResult:
    """pred, gt: (T, H, W, 3) uint8 RGB. Returns per-frame values and the clip summary."""
    if len(pred) != len(gt):
        raise ValueError(f"clip {name}: {len(pred)} restored frames but {len(gt)} GT frames; "
                         f"the restored clip must have one frame per GT frame")
    if pred.shape[1:3] != gt.shape[1:3]:
        tqdm.write(f"warning: clip {name}: restored frames are {pred.shape[2]}x{pred.shape[1]}, GT "
                   f"{gt.shape[2]}x{gt.shape[1]}; resizing the restored frames to the GT size (bicubic)")
        pred = np.stack([cv2.resize(f, (gt.shape[2], gt.shape[1]), interpolation=cv2.INTER_CUBIC) for f in pred])
    frames = {key: np.asarray(metric(pred, gt), dtype=np.float64) for key, metric in metrics.metrics.items()}
    slices, x = None, None
    if slice_column is not None:
        x = min(max(slice_column, 0), gt.shape[2] - 1)
        slices = {"pred": pred[:, :, x].transpose(1, 0, 2).copy(), "gt": gt[:, :, x].transpose(1, 0, 2).copy()}
    return ClipResult(name, frames, clip_summary(frames, metrics.requested), slices, x)


def evaluate_method(pred_root: Path, gt_root: Path, metrics: MetricSet, max_frames: Optional[int] = None,
                    slice_clips: Sequence[str] = (), slice_column: Optional[int] = None,
                    desc: str = "eval") -> List[ClipResult]:
    """Every GT clip of ``gt_root`` against its prediction in ``pred_root``."""
    results = []
    for name, (pred_path, gt_path) in tqdm(match_clips(pred_root, gt_root).items(), desc=desc, unit="clip"):
        gt = read_frames(gt_path, max_frames)
        pred = read_frames(pred_path, max_frames)
        column = (gt.shape[2] // 2 if slice_column is None else slice_column) if name in slice_clips else None
        results.append(evaluate_clip(pred, gt, name, metrics, column))
    return results


def method_summary(results: Sequence[ClipResult], names: Sequence[str]) -> Dict[str, float]:
    """Mean over clips of every requested metric's clip value."""
    return {n: float(np.mean([r.summary[n] for r in results])) for n in names}
