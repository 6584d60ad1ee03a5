"""Backward warping by optical flow, as the release computes it."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def flow_warp(x: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Sample ``x`` at ``pixel + flow``: out[:, :, i, j] = x[:, :, i + flow_y, j + flow_x].

    x (N, C, H, W); flow (N, 2, H, W) in pixels, channel 0 = x (columns), channel 1 = y (rows),
    defined on the output grid (for KEEP: the flow from frame t to frame t-1 warps the previous
    restored frame onto frame t). Bilinear, zeros outside (mid-grey in [-1, 1] images),
    ``align_corners=True`` with the grid normalised by (size - 1), as the release does.
    Returns (N, C, H, W).
    """
    if flow.shape[0] != x.shape[0] or flow.shape[1] != 2 or flow.shape[-2:] != x.shape[-2:]:
        raise ValueError(f"flow must be (N, 2, H, W) matching x {tuple(x.shape)}, got {tuple(flow.shape)}")
    _, _, h, w = x.shape
    rows = torch.arange(h, device=x.device, dtype=flow.dtype).view(1, h, 1)
    cols = torch.arange(w, device=x.device, dtype=flow.dtype).view(1, 1, w)
    grid_x = 2.0 * (cols + flow[:, 0]) / max(w - 1, 1) - 1.0
    grid_y = 2.0 * (rows + flow[:, 1]) / max(h - 1, 1) - 1.0
    grid = torch.stack([grid_x, grid_y], dim=-1)
    return F.grid_sample(x, grid.to(x.dtype), mode="bilinear", padding_mode="zeros", align_corners=True)
