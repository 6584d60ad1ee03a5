"""Alignment crops and paste-back on the network's device: batched ``affine_grid`` / ``grid_sample``.

The same geometry as the OpenCV path (keep/face/align.py, keep/face/paste.py), done where the
network runs so that frames cross the bus once each way as uint8 (pinned host memory on CUDA)
and crops and restored faces never leave the device:

* crops: ``cv2.warpAffine(frame, M, (n, n), INTER_LINEAR, BORDER_CONSTANT=grey)`` becomes one
  ``grid_sample`` over a window's T frames (bilinear, zeros padding, plus a warped ones channel
  that puts the grey border in exactly where OpenCV's constant border would);
* paste-back: the restored face and the ones-square warped into the face's bounding box on the
  canvas, the release's feathering (erode by 2*upscale, erode by 2*edge, Gaussian blur of
  2*edge+1) as min-pooling and a separable convolution with OpenCV's own Gaussian kernel and
  border rules (BORDER_REFLECT_101 for the blur, "outside never erodes" for erosion), then the
  same float blend and rounding.

What is not identical: OpenCV quantises sampling positions to 1/32 px (and uint8 weights to
15 bits); ``grid_sample`` interpolates in float32. Crops and pasted frames therefore differ by a
level or two at sharp edges; tests/test_pipeline.py states and checks the tolerance. The one
scalar the mask needs from the pixels, ``edge = int(sqrt(sum(eroded square))) // 20``, is computed
on the host with OpenCV from the matrix alone (a small warp of ones), so the feathering width is
the OpenCV path's exactly and no device -> host synchronisation happens per face.
"""
from __future__ import annotations

import os
from typing import Callable, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from keep.face.align import BORDER_RGB
from keep.face.paste import FacePaster

# ITU-R 601 weights of keep.face.paste.gray_face
_LUMA = (0.2989, 0.587, 0.114)


# The GPU code path is plain torch, so it runs on CPU tensors too: CI (which has no GPU) forces it with
# RestoreOptions(device_path="force") or, through the command line, KEEP_DEVICE_PATH=force, and compares
# it with the OpenCV path (tests/test_device_path.py). Not a user option: on the CPU OpenCV is faster.
DEVICE_PATH_ENV = "KEEP_DEVICE_PATH"


def device_path_forced(choice: str = "auto") -> bool:
    """Whether the GPU code path (device crops, paste and compose, autocast precisions, overlapped stages)
    runs whatever the device: ``choice`` "force", or "auto" with ``KEEP_DEVICE_PATH=force``."""
    if choice not in ("auto", "force"):
        raise ValueError(f"device_path must be 'auto' or 'force', got {choice!r}")
    if choice == "auto":
        choice = os.environ.get(DEVICE_PATH_ENV, "auto") or "auto"
        if choice not in ("auto", "force"):
            raise ValueError(f"{DEVICE_PATH_ENV}={choice!r}: unset it or set it to 'force'")
    return choice == "force"


def _normaliser(width: int, height: int) -> np.ndarray:
    """Pixel coordinates -> grid_sample's [-1, 1] coordinates (align_corners=False: pixel centres at (2x+1)/W - 1)."""
    return np.array([[2.0 / width, 0.0, 1.0 / width - 1.0], [0.0, 2.0 / height, 1.0 / height - 1.0], [0, 0, 1.0]])


def sampling_theta(matrices: Sequence[np.ndarray], src_size: Tuple[int, int], dst_size: Tuple[int, int]) -> np.ndarray:
    """(2, 3) forward maps src pixels -> dst pixels (cv2.warpAffine's convention) -> (B, 2, 3) ``affine_grid`` thetas.

    ``src_size`` / ``dst_size`` are (width, height). Composed in float64 on the host."""
    to_src = _normaliser(*src_size)
    from_dst = np.linalg.inv(_normaliser(*dst_size))
    thetas = []
    for matrix in matrices:
        inverse = np.vstack([cv2.invertAffineTransform(np.asarray(matrix, np.float64)), [0, 0, 1.0]])
        thetas.append((to_src @ inverse @ from_dst)[:2])
    return np.stack(thetas)


def warp_affine(images: torch.Tensor, matrices: Sequence[np.ndarray], dst_size: Tuple[int, int]) -> torch.Tensor:
    """Batched bilinear warp, zeros outside: (B, C, H, W) float -> (B, C, h, w); ``dst_size`` = (w, h)."""
    b, c, h, w = images.shape
    theta = torch.from_numpy(sampling_theta(matrices, (w, h), dst_size)).to(images.device, torch.float32)
    grid = F.affine_grid(theta, [b, c, dst_size[1], dst_size[0]], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def erode(mask: torch.Tensor, size: int) -> torch.Tensor:
    """cv2.erode with a ``size`` x ``size`` box (anchor at size // 2; pixels outside never erode): (N, 1, H, W)."""
    if size <= 1:
        return mask
    before, after = size // 2, size - 1 - size // 2
    # a box minimum is separable: a row pass then a column pass, 2k taps instead of k^2 (k ~ 50 at 4K)
    rows = F.max_pool2d(F.pad(-mask, (before, after, 0, 0), value=float("-inf")), (1, size), stride=1)
    return -F.max_pool2d(F.pad(rows, (0, 0, before, after), value=float("-inf")), (size, 1), stride=1)


def gaussian_blur(mask: torch.Tensor, ksize: int) -> torch.Tensor:
    """cv2.GaussianBlur(mask, (ksize, ksize), 0): OpenCV's own kernel, BORDER_REFLECT_101, separable. (N, 1, H, W)."""
    kernel = torch.from_numpy(cv2.getGaussianKernel(ksize, 0).astype(np.float32).ravel()).to(mask.device)
    pad = ksize // 2
    if min(mask.shape[-2:]) <= pad:  # reflect padding needs a wider image: never for real faces
        raise ValueError(f"mask {tuple(mask.shape[-2:])} too small for a {ksize}-tap blur")
    x = F.pad(mask, (pad, pad, 0, 0), mode="reflect")
    x = F.conv2d(x, kernel.view(1, 1, 1, ksize))
    x = F.pad(x, (0, 0, pad, pad), mode="reflect")
    return F.conv2d(x, kernel.view(1, 1, ksize, 1))


def upload(image: np.ndarray, device: torch.device) -> torch.Tensor:
    """(H, W, 3) uint8 -> the same on ``device``, through pinned memory on CUDA (asynchronous copy)."""
    tensor = torch.from_numpy(np.ascontiguousarray(image))
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


def crop_region(matrix: np.ndarray, size: int, frame_hw: Tuple[int, int], margin: int = 2) -> Tuple[int, int, int, int]:
    """(x0, y0, x1, y1): the part of a (H, W) frame that a ``size`` crop by ``matrix`` (frame -> crop)
    reads, clipped to the frame. ``margin`` covers the bilinear taps beyond the crop's corners, so
    sampling the region gives the same pixels as sampling the frame (outside the frame: the border)."""
    inverse = cv2.invertAffineTransform(np.asarray(matrix, np.float64))
    corners = np.array([[-0.5, -0.5, 1], [size - 0.5, -0.5, 1], [size - 0.5, size - 0.5, 1], [-0.5, size - 0.5, 1]])
    points = corners @ inverse.T
    height, width = frame_hw
    x0, y0 = np.maximum(np.floor(points.min(0)).astype(int) - margin, 0)
    x1, y1 = np.minimum(np.ceil(points.max(0)).astype(int) + margin + 1, [width, height])
    return int(x0), int(y0), int(max(x1, x0)), int(max(y1, y0))


def crop_faces(frames: Sequence[torch.Tensor], matrices: Sequence[np.ndarray], size: int) -> torch.Tensor:
    """T (H, W, 3) uint8 frames on the device and their (2, 3) frame -> crop maps -> (T, size, size, 3) uint8.

    keep.face.align.warp_face for a whole window in one ``grid_sample``. Only the region around each
    face (:func:`crop_region`) is converted to float, not the whole frame: a 20-frame window of 4K
    frames as float32 would be 2.6 GB per track (issue 21 item 5); regions are zero-padded to one size,
    and the zeros are read only where the crop leaves the frame, as the frame's own zero padding."""
    regions = [crop_region(m, size, tuple(f.shape[:2])) for m, f in zip(matrices, frames)]
    height = max(1, max(y1 - y0 for _, y0, _, y1 in regions))
    width = max(1, max(x1 - x0 for x0, _, x1, _ in regions))
    device = frames[0].device
    # channels: RGB and a ones channel that marks the frame's pixels (the border's weight is 1 - coverage)
    x = torch.zeros((len(frames), 4, height, width), dtype=torch.float32, device=device)
    shifted = []
    for i, (frame, matrix, (x0, y0, x1, y1)) in enumerate(zip(frames, matrices, regions)):
        if x1 > x0 and y1 > y0:
            x[i, :3, :y1 - y0, :x1 - x0] = frame[y0:y1, x0:x1].permute(2, 0, 1)
            x[i, 3, :y1 - y0, :x1 - x0] = 1.0
        moved = np.array(matrix, np.float64)
        moved[:, 2] += moved[:, :2] @ np.array([x0, y0], np.float64)   # region pixel (u, v) = frame (u + x0, v + y0)
        shifted.append(moved)
    warped = warp_affine(x, shifted, (size, size))
    coverage = warped[:, 3:]
    border = torch.tensor(BORDER_RGB, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    # OpenCV's constant border = bilinear taps outside the frame read the border colour
    crops = warped[:, :3] + (1.0 - coverage) * border
    return crops.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)


def gray_face(face: torch.Tensor) -> torch.Tensor:
    """keep.face.paste.gray_face on a (F, F, 3) uint8 tensor."""
    weights = torch.tensor(_LUMA, dtype=torch.float32, device=face.device)
    luma = (face.float() @ weights).round().clamp(0, 255).to(torch.uint8)
    return luma[..., None].expand(*luma.shape, 3).contiguous()


def to_uint8(canvas: torch.Tensor) -> torch.Tensor:
    """Round (half to even, as np.rint) and clip a float canvas to uint8."""
    return canvas.round().clamp(0, 255).to(torch.uint8)


class DevicePaster:
    """keep.face.paste.FacePaster on the device: blend (F, F, 3) uint8 faces into a (H, W, 3) float32 canvas.

    ``parse`` as in FacePaster (numpy face -> numpy mask; its result is uploaded)."""

    def __init__(self, upscale: float = 1.0, parse: Optional[Callable[[np.ndarray], np.ndarray]] = None):
        self.upscale = upscale
        self.parse = parse
        self._maps = FacePaster(upscale)   # the same face -> canvas map (pixel-centre aligned)

    def region(self, matrix: np.ndarray, size: int, canvas_hw: Tuple[int, int]):
        """Host-side plan of one paste: bounding box, face -> box map, and the feathering width.

        Needs only the matrix (no pixels), so it never waits for the device."""
        full = self._maps.face_to_canvas(matrix, size)
        corners = np.array([[-0.5, -0.5, 1], [size - 0.5, -0.5, 1], [size - 0.5, size - 0.5, 1],
                            [-0.5, size - 0.5, 1]])
        points = (full @ corners.T).T[:, :2]
        height, width = canvas_hw
        x0, y0 = np.maximum(np.floor(points.min(0)).astype(int) - 2, 0)
        x1, y1 = np.minimum(np.ceil(points.max(0)).astype(int) + 3, [width, height])
        if x1 <= x0 or y1 <= y0:
            return None
        roi = full.copy()
        roi[:2, 2] -= (x0, y0)
        roi = roi[:2]
        box = (int(x1 - x0), int(y1 - y0))
        first_erode = max(1, int(2 * self.upscale))
        # the feathering width from the eroded square's area, exactly as keep/face/paste.py computes it
        square = cv2.warpAffine(np.ones((size, size), np.float32), roi, box, flags=cv2.INTER_LINEAR, borderValue=0)
        square = cv2.erode(square, np.ones((first_erode, first_erode), np.uint8))
        edge = int(np.sqrt(square.sum())) // 20
        return (int(x0), int(y0), int(x1), int(y1)), roi, box, first_erode, edge

    def paste(self, canvas: torch.Tensor, face: torch.Tensor, matrix: np.ndarray,
              plan=None) -> None:
        """Blend ``face`` (F, F, 3) uint8 into ``canvas`` (H, W, 3) float32 in place (FacePaster.paste)."""
        size = face.shape[0]
        plan = plan if plan is not None else self.region(matrix, size, tuple(canvas.shape[:2]))
        if plan is None:
            return
        (x0, y0, x1, y1), roi, box, first_erode, edge = plan
        ones = torch.ones((1, size, size), dtype=torch.float32, device=face.device)
        sources = torch.cat([face.permute(2, 0, 1).float(), ones], dim=0)[None]
        warped = warp_affine(sources, [roi], box)
        square = erode(warped[:, 3:], first_erode)
        mask = square
        if edge > 0:
            mask = gaussian_blur(erode(square, 2 * edge), 2 * edge + 1)
        if self.parse is not None:
            parsed = self.parse(face.cpu().numpy())
            if parsed.shape[0] != size:
                parsed = cv2.resize(parsed, (size, size), interpolation=cv2.INTER_LINEAR)
            parsed = torch.from_numpy(np.ascontiguousarray(parsed, np.float32)).to(face.device)
            mask = torch.minimum(mask, warp_affine(parsed[None, None], [roi], box))
        mask = mask[0].permute(1, 2, 0)          # (h, w, 1)
        colour = warped[0, :3].permute(1, 2, 0)  # (h, w, 3)
        region = canvas[y0:y1, x0:x1]
        region.mul_(1.0 - mask)
        region.add_(mask * colour)


__all__ = ["DEVICE_PATH_ENV", "DevicePaster", "device_path_forced", "crop_faces", "crop_region", "erode",
           "gaussian_blur", "gray_face", "sampling_theta", "to_uint8", "upload", "warp_affine"]
