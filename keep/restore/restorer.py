"""The network side of the pipeline: windows of aligned faces in, restored faces out, one Kalman state per track."""
from __future__ import annotations

import contextlib
from typing import Dict, List, Optional

import numpy as np
import torch

from keep.precision import configure_cuda_precision

_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA, else MPS, else CPU; an explicit device must exist."""
    has_mps = bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if has_mps else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA GPU is visible to PyTorch; use --device cpu or auto")
    if name == "mps" and not has_mps:
        raise ValueError("--device mps: Apple MPS is not available; use --device cpu or auto")
    return torch.device(name)


def faces_to_tensor(faces: List[np.ndarray], device: torch.device) -> torch.Tensor:
    """T x (n, n, 3) uint8 RGB -> (1, T, 3, n, n) float32 in [-1, 1] (the release's (x/255 - 0.5)/0.5)."""
    batch = torch.from_numpy(np.stack(faces)).to(device)
    return batch.permute(0, 3, 1, 2).float().div(127.5).sub(1.0).unsqueeze(0)


def tensor_to_faces(frames: torch.Tensor) -> List[np.ndarray]:
    """(1, T, 3, n, n) unbounded -> T x (n, n, 3) uint8: clamp to [-1, 1], map to [0, 255], round."""
    images = frames[0].float().clamp(-1, 1).add(1).mul(127.5).round().byte()
    return list(images.permute(0, 2, 3, 1).cpu().numpy())


class FaceRestorer:
    """Runs ``net.restore_window`` per track, carrying each track's :class:`KalmanState`.

    ``reset_state`` starts every window fresh (the release); ``propagate=False`` restores each
    frame alone (image baseline).
    """

    def __init__(self, net: torch.nn.Module, device: torch.device, precision: str = "fp32",
                 reset_state: bool = False, propagate: bool = True, cpu_autocast: bool = False):
        # ``cpu_autocast``: allow fp16/bf16 autocast on the CPU (the forced GPU code path of CI only)
        if precision in ("fp16", "bf16") and device.type == "cpu" and not cpu_autocast:
            raise ValueError(f"--{precision} needs a GPU (autocast on CUDA/MPS); on CPU run in fp32")
        # once, here, before the pipeline starts its threads: never flipped while they run (keep.precision)
        configure_cuda_precision(precision, device)
        self.net = net
        self.device = device
        self.size = int(net.img_size)
        self.dtype = _DTYPES.get(precision)
        self.reset_state = reset_state
        self.propagate = propagate
        self._states: Dict[int, Optional[object]] = {}

    def _autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    @torch.inference_mode()
    def restore(self, track: int, faces: List[np.ndarray]) -> List[np.ndarray]:
        """Restore the next window of ``track``: T x (n, n, 3) uint8 aligned crops -> same, restored."""
        state = None if self.reset_state else self._states.get(track)
        with self._autocast():
            out, state = self.net.restore_window(faces_to_tensor(faces, self.device), state=state,
                                                 propagate=self.propagate)
        self._states[track] = state
        return tensor_to_faces(out)

    def end_track(self, track: int) -> None:
        """Free the state of a finished track."""
        self._states.pop(track, None)
