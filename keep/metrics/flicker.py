"""Temporal flicker: the warping error E_warp of Lai et al. (ECCV 2018, Eq. 8) between consecutive restored frames.

For t ≥ 1, with O_t the restored frame as RGB in [0, 1] and Ô_{t−1} = O_{t−1} warped onto frame t:

    E_t = Σ_p M_t(p) · ||O_t(p) − Ô_{t−1}(p)||²₂ / Σ_p M_t(p)

with ||·||²₂ the squared L2 norm of the 3-vector of RGB differences, i.e. **summed over the three
channels** as the paper prints it (this module used the channel mean, a third of it, until 2026-12;
Lai et al.'s released ``evaluate_WarpError.py`` also ends up with the channel mean because it reads
the 1-channel occlusion PNG as 3 channels, so divide by 3 to compare with numbers from that script).
The clip's E_warp is the mean of E_t over t (frame 0 has none); tables print it ×10⁻³. Lower is
better: a restoration that changes only where the scene moves scores close to 0.

The flow and the non-occlusion mask M are estimated on the **ground-truth** clip (Lai et al. estimate
them on the input video), so every method is warped with the same motion and a method's own
artefacts cannot bend the flow to hide its flicker. M drops, as Lai et al. (after Ruder et al. 2016),
pixels whose flow leaves the frame, fails the forward–backward check
(|w_f + w_b|² > 0.01 (|w_f|² + |w_b|²) + 0.5) or lies on a motion boundary
(|∇u|² + |∇v|² > 0.01 |w|² + 0.002, forward differences).

Flow backends: ``gmflow`` — the network KEEP itself uses (:class:`keep.archs.flow.FlowEstimator`,
weights ``gmflow-sintel``), column ``ewarp_gmflow``; ``farneback`` — OpenCV's Farneback flow, the
offline substitute, column ``ewarp_farneback``; ``auto`` picks GMFlow when its weights are on disk.
(Lai et al. used FlowNet2, which is not packaged here.)
"""
from __future__ import annotations

from typing import Callable

import cv2
import numpy as np
import torch

from keep.metrics.errors import MetricUnavailable
from keep.registry import METRICS
from keep.weights import WeightsNotFoundError, get_weight

FlowFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


def farneback_flow(img0: np.ndarray, img1: np.ndarray) -> np.ndarray:
    """Flow img0 -> img1 of (H, W, 3) uint8 RGB frames: (H, W, 2) float32, img0(p) ≈ img1(p + flow(p))."""
    g0 = cv2.cvtColor(img0, cv2.COLOR_RGB2GRAY)
    g1 = cv2.cvtColor(img1, cv2.COLOR_RGB2GRAY)
    return cv2.calcOpticalFlowFarneback(g0, g1, None, pyr_scale=0.5, levels=5, winsize=15,
                                        iterations=3, poly_n=5, poly_sigma=1.2, flags=0)


def load_gmflow(path) -> "torch.nn.Module":
    """:class:`FlowEstimator` with GMFlow weights from ``path`` (the gmflow release stores its state
    dict under ``model``), strict, eval mode."""
    from keep.archs.flow import FlowEstimator
    from keep.torch_file import load_torch_file
    state = load_torch_file(path)
    if isinstance(state, dict) and "model" in state:
        state = state["model"]
    net = FlowEstimator()
    net.model.load_state_dict(state, strict=True)
    return net.eval()


def gmflow_flow_fn(net: "torch.nn.Module", device: str = "cpu") -> FlowFn:
    """Wrap a FlowEstimator as a numpy flow function (same convention as :func:`farneback_flow`)."""
    @torch.no_grad()
    def flow(img0: np.ndarray, img1: np.ndarray) -> np.ndarray:
        x0, x1 = (torch.from_numpy(np.ascontiguousarray(i)).permute(2, 0, 1)[None].float().to(device) / 127.5 - 1
                  for i in (img0, img1))
        return net(x0, x1)[0].permute(1, 2, 0).cpu().numpy().astype(np.float32)
    return flow


def warp(img: np.ndarray, flow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Backward-warp (H, W, C) ``img`` by (H, W, 2) ``flow``: out(p) = img(p + flow(p)), bilinear.

    Returns (warped float32, inside) where ``inside`` (H, W) bool marks samples within the frame."""
    h, w = flow.shape[:2]
    xs = np.arange(w, dtype=np.float32)[None, :] + flow[..., 0]
    ys = np.arange(h, dtype=np.float32)[:, None] + flow[..., 1]
    out = cv2.remap(img.astype(np.float32), xs, ys, interpolation=cv2.INTER_LINEAR,
                    borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    inside = (xs >= 0) & (xs <= w - 1) & (ys >= 0) & (ys <= h - 1)
    return out.reshape(img.shape), inside


def motion_boundary(flow: np.ndarray) -> np.ndarray:
    """(H, W) bool: pixels where ``flow`` (H, W, 2) changes fast relative to its magnitude
    (Ruder et al. 2016 / Lai et al. 2018: |∇u|² + |∇v|² > 0.01 |w|² + 0.002, forward differences,
    0 on the last row / column)."""
    grad = np.zeros(flow.shape[:2])
    for c in range(2):
        du = np.zeros(flow.shape[:2])
        dv = np.zeros(flow.shape[:2])
        du[:, :-1] = flow[:, :-1, c] - flow[:, 1:, c]
        dv[:-1, :] = flow[:-1, :, c] - flow[1:, :, c]
        grad += du ** 2 + dv ** 2
    return grad > 0.01 * np.sum(flow.astype(np.float64) ** 2, -1) + 0.002


def non_occlusion_mask(flow_fw: np.ndarray, flow_bw: np.ndarray) -> np.ndarray:
    """(H, W) bool: pixels of frame t whose flow t->t-1 (``flow_fw``) lands inside frame t-1,
    agrees with the flow t-1->t (``flow_bw``) brought back along it (forward-backward check) and is
    not on a motion boundary of ``flow_fw``."""
    bw_at, inside = warp(flow_bw, flow_fw)
    total = flow_fw + bw_at
    bound = 0.01 * (np.sum(flow_fw ** 2, -1) + np.sum(bw_at ** 2, -1)) + 0.5
    return inside & (np.sum(total ** 2, -1) <= bound) & ~motion_boundary(flow_fw)


def warping_errors(pred: np.ndarray, gt: np.ndarray, flow_fn: FlowFn) -> np.ndarray:
    """Per-frame warping error of (T, H, W, 3) uint8 ``pred`` with the motion of ``gt`` -> (T,) float64,
    NaN for frame 0 (and for frames whose mask is empty)."""
    out = np.full(len(pred), np.nan)
    for t in range(1, len(pred)):
        if np.array_equal(gt[t], gt[t - 1]):
            # no motion by definition; estimators return sub-pixel noise on identical frames
            flow_fw = flow_bw = np.zeros(gt.shape[1:3] + (2,), np.float32)
        else:
            flow_fw = flow_fn(gt[t], gt[t - 1])      # frame t -> t-1: samples frame t-1 onto frame t
            flow_bw = flow_fn(gt[t - 1], gt[t])
        mask = non_occlusion_mask(flow_fw, flow_bw)
        if not mask.any():
            continue
        warped, _ = warp(pred[t - 1], flow_fw)
        diff = (pred[t].astype(np.float64) - warped) / 255.0
        # Eq. 8: squared L2 norm over the RGB channels (a sum), averaged over the unmasked pixels
        out[t] = float(np.sum((diff ** 2)[mask]) / mask.sum())
    return out


@METRICS.register("flicker")
class FlowWarpingError:
    """Per-frame flicker of a clip: (T, H, W, 3) uint8 x2 -> (T,) warping errors (frame 0 NaN)."""

    name = "flicker"
    higher_is_better = False

    def __init__(self, backend: str = "auto", device: str = "cpu"):
        if backend not in ("auto", "gmflow", "farneback"):
            raise ValueError(f"unknown flow backend '{backend}'; use auto, gmflow or farneback")
        self.flow_fn: FlowFn = farneback_flow
        self.backend = "farneback"
        if backend in ("auto", "gmflow"):
            try:
                self.flow_fn = gmflow_flow_fn(load_gmflow(get_weight("gmflow-sintel", download=False)).to(device),
                                              device)
                self.backend = "gmflow"
            except WeightsNotFoundError as err:
                if backend == "gmflow":
                    raise MetricUnavailable(f"flicker (GMFlow): {err}") from err
        self.label = f"ewarp_{self.backend}"
        self.backbone = "GMFlow (gmflow-sintel)" if self.backend == "gmflow" else "OpenCV Farneback flow"
        self.convention = ("E_warp of Lai et al. 2018 (Eq. 8): mean over t>=1 of sum_p M_t(p) ||O_t(p) - "
                           "warp(O_t-1)(p)||^2 / sum_p M_t(p), squared L2 norm SUMMED over the RGB channels "
                           "in [0,1]; flow and non-occlusion mask M (in frame, forward-backward check, "
                           f"no motion boundary) from the GT clip with {self.backbone}")

    def __call__(self, pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
        return warping_errors(pred, gt, self.flow_fn)
