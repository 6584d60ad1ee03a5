"""Compute the paper's metrics for restored clips against their ground truth.

Aggregation (as the paper's tables): a clip's value is the mean of its per-frame values; σ_IDS and
σ_AKD are the standard deviations (ddof 0) of a clip's per-frame IDS / AKD; a method's value is the
mean of its clips' values (every clip weighs the same, whatever its length).

Set metrics (FVD) are not per frame: a clip gives features, the clip's value is computed from its
own features and a method's value from the features of all its clips (not a mean of clip values).

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

# Order of the paper's table (Table 1 / A2), then the Y-channel variants, flicker and FVD.
METRIC_NAMES = ("psnr", "ssim", "lpips", "ids", "akd", "sigma_ids", "sigma_akd", "psnr_y", "ssim_y", "flicker", "fvd")
_NEEDS = {"sigma_ids": "ids", "sigma_akd": "akd"}
SUBSTITUTE_SUFFIXES = ("_dlib", "_farneback")   # column suffixes of the offline substitute backends


def base_metric(name: str) -> str:
    """The frame metric a requested metric is computed from (sigma_ids -> ids)."""
    return _NEEDS.get(name, name)


@dataclass
class MetricOptions:
    """Backend choices of the metrics (see each metric module for the conventions)."""
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
    fallback_labels: Dict[str, str] = field(default_factory=dict)   # column of an unavailable metric

    def is_set_metric(self, name: str) -> bool:
        return getattr(self.metrics.get(name), "kind", "frame") == "set"

    @property
    def frame_metrics(self) -> Dict[str, object]:
        return {k: m for k, m in self.metrics.items() if not self.is_set_metric(k)}

    def backbone(self, name: str) -> str:
        """The network / detector behind a metric's column ("" when none, e.g. PSNR)."""
        return getattr(self.metrics.get(base_metric(name)), "backbone", "")

    def substitutes(self) -> List[str]:
        """Requested metrics that run on an offline substitute backend."""
        return [n for n in self.requested if self.label(n).endswith(SUBSTITUTE_SUFFIXES)]

    def label(self, name: str) -> str:
        """CSV column of a metric: its name, suffixed with the backend when an offline substitute runs."""
        if name in _NEEDS:
            base = _NEEDS[name]
            return "sigma_" + self.label(base)
        return self.metrics[name].label if name in self.metrics else self.fallback_labels.get(name, name)

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


# Columns of metrics that could not be built: the backbone the user asked for stays in the name.
_FALLBACK_LABELS = {
    "lpips": lambda o: f"lpips_{o.lpips_net}",
    "ids": lambda o: "ids_dlib" if o.ids_backend == "dlib" else "ids_arcface_r18",
    "akd": lambda o: "akd_dlib",
    "flicker": lambda o: "ewarp_farneback" if o.flow_backend == "farneback" else "ewarp_gmflow",
}


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

    from keep.metrics.fvd import FrechetVideoDistance

    factories = {
        "psnr": lambda: PSNR(opts.crop_border, False),
        "ssim": lambda: SSIM(opts.crop_border, False),
        "psnr_y": lambda: PSNR(opts.crop_border, True),
        "ssim_y": lambda: SSIM(opts.crop_border, True),
        "lpips": lambda: LPIPSMetric(opts.lpips_net, opts.device),
        "ids": lambda: IdentitySimilarity(opts.ids_backend, opts.device),
        "akd": lambda: KeypointDistance(),
        "flicker": lambda: FlowWarpingError(opts.flow_backend, opts.device),
        "fvd": lambda: FrechetVideoDistance(opts.device),
    }
    out = MetricSet(requested=list(names))
    for base in dict.fromkeys(_NEEDS.get(n, n) for n in names):
        try:
            out.metrics[base] = factories[base]()
        except MetricUnavailable as err:
            out.unavailable[base] = str(err)
            out.fallback_labels[base] = _FALLBACK_LABELS.get(base, lambda o: base)(opts)
    return out


@dataclass
class ClipResult:
    clip: str
    frames: Dict[str, np.ndarray]            # frame metric name -> (T,)
    summary: Dict[str, float]                # requested metric name -> clip value
    slices: Optional[Dict[str, np.ndarray]] = None   # "pred"/"gt" -> (H, T, 3) column over time
    slice_column: Optional[int] = None
    features: Dict[str, tuple] = field(default_factory=dict)   # set metric -> (pred (N, D), gt (N, D))


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


def match_clips(pred_root: Path, gt_root: Path, allow_name_mismatch: bool = False) -> Dict[str, tuple]:
    """{clip: (pred path, gt path)} for every GT clip; error if a GT clip has no prediction.

    One prediction clip and one GT clip of different names are compared only with
    ``allow_name_mismatch`` (otherwise a wrong folder would be scored without a word)."""
    gt_clips, pred_clips = list_clips(gt_root), list_clips(pred_root)
    if len(gt_clips) == 1 and len(pred_clips) == 1:   # two single-clip folders: compare them directly
        (gt_name, gt_path), (pred_name, pred_path) = next(iter(gt_clips.items())), next(iter(pred_clips.items()))
        if pred_name != gt_name and not allow_name_mismatch:
            raise ValueError(f"{pred_root} holds one clip '{pred_name}' and {gt_root} one clip '{gt_name}': the "
                             f"names differ; pass --allow-name-mismatch to score them against each other anyway")
        return {gt_name: (pred_path, gt_path)}
    missing = [c for c in gt_clips if c not in pred_clips]
    if missing:
        raise ValueError(f"{pred_root} has no prediction for GT clip(s) {', '.join(missing[:5])}"
                         f"{' ...' if len(missing) > 5 else ''} (found: {', '.join(list(pred_clips)[:5])}); "
                         f"restore every GT clip, named like the GT")
    return {c: (pred_clips[c], gt_clips[c]) for c in gt_clips}


def probe_clips(pairs: Dict[str, tuple]) -> None:
    """Decode the first frame of every clip of ``pairs`` ({clip: (pred, GT)}): a broken or unreadable
    input is reported before any metric network is loaded, not after an hour of evaluation."""
    for pred_path, gt_path in pairs.values():
        for path in (pred_path, gt_path):
            read_frames(path, max_frames=1)


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
    frames = {key: np.asarray(metric(pred, gt), dtype=np.float64) for key, metric in metrics.frame_metrics.items()}
    features = {key: (metric.features(pred), metric.gt_features(gt))
                for key, metric in metrics.metrics.items() if metrics.is_set_metric(key)}
    slices, x = None, None
    if slice_column is not None:
        x = min(max(slice_column, 0), gt.shape[2] - 1)
        slices = {"pred": pred[:, :, x].transpose(1, 0, 2).copy(), "gt": gt[:, :, x].transpose(1, 0, 2).copy()}
    summary = clip_summary(frames, [n for n in metrics.requested if not metrics.is_set_metric(n)])
    for key, (feats_pred, feats_gt) in features.items():
        summary[key] = _set_value(feats_pred, feats_gt)
    return ClipResult(name, frames, {n: summary.get(n, float("nan")) for n in metrics.requested}, slices, x, features)


def _set_value(feats_pred: np.ndarray, feats_gt: np.ndarray) -> float:
    """FVD of two feature sets, NaN when there are fewer than 2 samples (a clip under 32 frames)."""
    from keep.metrics.fvd import frechet_distance
    if len(feats_pred) < 2 or len(feats_gt) < 2:
        return float("nan")
    return frechet_distance(feats_pred, feats_gt)


def evaluate_method(pairs: Dict[str, tuple], metrics: MetricSet, max_frames: Optional[int] = None,
                    slice_clips: Sequence[str] = (), slice_column: Optional[int] = None,
                    desc: str = "eval") -> List[ClipResult]:
    """Every clip of ``pairs`` ({clip: (pred path, GT path)}, from :func:`match_clips`)."""
    results = []
    for name, (pred_path, gt_path) in tqdm(pairs.items(), desc=desc, unit="clip"):
        gt = read_frames(gt_path, max_frames)
        pred = read_frames(pred_path, max_frames)
        column = (gt.shape[2] // 2 if slice_column is None else slice_column) if name in slice_clips else None
        results.append(evaluate_clip(pred, gt, name, metrics, column))
    return results


def method_summary(results: Sequence[ClipResult], names: Sequence[str]) -> Dict[str, float]:
    """Mean over clips of every requested metric's clip value; a set metric (FVD) from the features of
    all clips pooled (NaN where it was not computed)."""
    out = {}
    for n in names:
        pooled = [r.features[n] for r in results if n in r.features]
        if pooled:
            out[n] = _set_value(np.concatenate([p for p, _ in pooled]), np.concatenate([g for _, g in pooled]))
        else:
            out[n] = float(np.mean([r.summary[n] for r in results])) if results else float("nan")
    return out
