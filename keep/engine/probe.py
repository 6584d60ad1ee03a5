"""What a trained stage does on held-out clips, in the numbers the paper reports: PSNR against the
GT, against the bicubic up-scaled LQ input, and the image baseline (the same KEEP restoring every
frame alone, ``propagate=False``: no Kalman prediction, no CFA); flicker (the warping error of
:mod:`keep.metrics.flicker`, Farneback flow on the GT); and for KEEP the code accuracy (top-1 code
vs the nearest code of E_H(GT), the target of Eq. 4).

Used by the tests that fail when the Kalman path stops helping, and by
``scripts/learning_experiment.py``.
"""
from __future__ import annotations

from typing import Dict, Iterable

import cv2
import numpy as np
import torch
from torch import nn

from keep.data.dataset import to_uint8
from keep.metrics.flicker import farneback_flow, warping_errors
from keep.metrics.psnr_ssim import psnr
from keep.models.base import upsample_like


def bicubic(lq: np.ndarray, size: int) -> np.ndarray:
    """(T, h, w, 3) uint8 -> (T, size, size, 3) uint8, OpenCV bicubic (the classic SR baseline)."""
    return np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_CUBIC) for f in lq])


def _clip_psnr(pred: np.ndarray, gt: np.ndarray) -> float:
    values = [psnr(p, g) for p, g in zip(pred, gt)]
    finite = [v for v in values if np.isfinite(v)]
    return float(np.mean(finite)) if finite else float("inf")


@torch.no_grad()
def evaluate_keep(net: nn.Module, samples: Iterable[Dict[str, torch.Tensor]], propagate: bool = True
                  ) -> Dict[str, float]:
    """Mean PSNR, bicubic PSNR, flicker (x1e-3) and code accuracy of a KEEP ``net`` over ``samples``
    (dataset items: ``gt`` (T, 3, S, S), ``lq`` (T, 3, s, s) in [-1, 1])."""
    was_training = net.training
    net.eval()
    rows = []
    for sample in samples:
        gt, lq = sample["gt"][None], sample["lq"][None]
        out = net(upsample_like(lq, gt), propagate=propagate, return_intermediates=True)
        z, _ = net.hq_encoder(gt.flatten(0, 1))
        target = net.quantize.nearest(z)
        pred_u8, gt_u8 = to_uint8(out.frames[0]), to_uint8(gt[0])
        row = {"psnr": _clip_psnr(pred_u8, gt_u8),
               "psnr_bicubic": _clip_psnr(bicubic(to_uint8(lq[0]), gt.shape[-1]), gt_u8),
               "code_acc": float((out.indices.flatten(0, 1) == target).float().mean())}
        if gt.shape[1] > 1:
            row["flicker"] = float(np.nanmean(warping_errors(pred_u8, gt_u8, farneback_flow))) * 1e3
        rows.append(row)
    net.train(was_training)
    return {k: float(np.mean([r[k] for r in rows if k in r])) for k in rows[0]}


@torch.no_grad()
def evaluate_vqgan(net: nn.Module, samples: Iterable[Dict[str, torch.Tensor]]) -> Dict[str, float]:
    """Reconstruction PSNR of a stage I VQGAN on the GT frames of ``samples``."""
    was_training = net.training
    net.eval()
    values = []
    for sample in samples:
        gt = sample["gt"]
        values.append(_clip_psnr(to_uint8(net(gt)[0]), to_uint8(gt)))
    net.train(was_training)
    return {"psnr": float(np.mean(values))}
