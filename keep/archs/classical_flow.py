"""Classical optical flow (OpenCV DIS or Farneback) behind KEEP's flow-net interface.

Why: without the GMFlow weights (offline, tiny configs, tests) a GMFlow of random weights returns
noise (several pixels of flow where the clip moves a fraction of one), so the Kalman state
prediction of Eq. 12 carries no information, stage II learns to ignore it and the temporal loss's
forward-backward mask (Eq. 8) is empty. A classical estimator needs no weights, follows real motion
to a fraction of a pixel on textured content, and keeps the temporal path exercised.

Same calls as :class:`keep.archs.flow.FlowEstimator`: ``module(img0, img1)`` -> the flow from img0
to img1 that backward-warps img1 onto img0 (``img0(p) ≈ img1(p + flow(p))``, OpenCV's own
convention for ``prev=img0, next=img1``), and ``module.sequence(frames)``. It has no parameters
(nothing to freeze, nothing in the checkpoint) and never carries gradients.
"""
from __future__ import annotations

import cv2
import numpy as np
import torch
from torch import Tensor, nn

CLASSICAL_FLOWS = ("dis", "farneback")
_DIS_PRESETS = {"ultrafast": 0, "fast": 1, "medium": 2}


class ClassicalFlow(nn.Module):
    """OpenCV optical flow on grey frames, computed on the CPU (frames are moved there and back).

    Args:
        method: ``dis`` (dense inverse search, Kroeger et al. 2016) or ``farneback``.
        preset: DIS preset (ultrafast | fast | medium); ``medium`` is the most accurate.
    """

    def __init__(self, method: str = "dis", preset: str = "medium"):
        super().__init__()
        if method not in CLASSICAL_FLOWS:
            raise ValueError(f"classical flow method must be one of {CLASSICAL_FLOWS}, got {method!r}")
        if preset not in _DIS_PRESETS:
            raise ValueError(f"DIS preset must be one of {sorted(_DIS_PRESETS)}, got {preset!r}")
        self.method, self.preset = method, preset

    @staticmethod
    def _grey(frames: Tensor) -> np.ndarray:
        """(N, 3, H, W) RGB in [-1, 1] -> (N, H, W) uint8 luma (BT.601 weights)."""
        rgb = ((frames.detach().float().clamp(-1, 1) + 1) * 127.5).cpu()
        luma = 0.299 * rgb[:, 0] + 0.587 * rgb[:, 1] + 0.114 * rgb[:, 2]
        return luma.round().to(torch.uint8).numpy()

    def _pair(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        if self.method == "dis":
            dis = cv2.DISOpticalFlow_create(_DIS_PRESETS[self.preset])
            return dis.calc(a, b, None)
        return cv2.calcOpticalFlowFarneback(a, b, None, pyr_scale=0.5, levels=3, winsize=9, iterations=5,
                                            poly_n=5, poly_sigma=1.1, flags=0)

    @torch.no_grad()
    def forward(self, img0: Tensor, img1: Tensor) -> Tensor:
        """img0, img1: (N, 3, H, W) RGB in [-1, 1] -> flow img0 -> img1, (N, 2, H, W) pixels (x, y)."""
        if img0.shape != img1.shape or img0.dim() != 4:
            raise ValueError(f"need two (N, 3, H, W) batches of equal shape, got {tuple(img0.shape)} "
                             f"and {tuple(img1.shape)}")
        a, b = self._grey(img0), self._grey(img1)
        flows = np.stack([self._pair(x, y) for x, y in zip(a, b)])  # (N, H, W, 2)
        return torch.from_numpy(flows).permute(0, 3, 1, 2).contiguous().to(img0.device, torch.float32)

    def sequence(self, frames: Tensor) -> Tensor:
        """(B, L, 3, H, W) -> (B, L-1, 2, H, W): entry l is the flow from frame l+1 to frame l."""
        b, length = frames.shape[:2]
        if length < 2:
            raise ValueError(f"need at least 2 frames for a flow, got {length}")
        flow = self(frames[:, 1:].flatten(0, 1), frames[:, :-1].flatten(0, 1))
        return flow.view(b, length - 1, *flow.shape[1:])
