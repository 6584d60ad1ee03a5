"""The CUDA float32 precision of a run: set once, before the run's threads start, and never flipped.

PyTorch's TF32 switches (``torch.backends.cudnn.allow_tf32``, ``torch.backends.cuda.matmul.allow_tf32``)
are process-wide. Flipping them around the flow net from the network thread (as this project once did)
changed the precision of whatever the detector, the face parser and Real-ESRGAN ran on the other threads
at that moment, and two threads saving and restoring them in turn could leave TF32 on under a flow
computation. So a run sets them once, in :func:`configure_cuda_precision`, and nothing changes them
while it runs:

* ``fp32`` (default): PyTorch's defaults, as the official inference runs: cuDNN convolutions in TF32,
  matmuls in true fp32 (so the code transformer's logits and the flow net's global matching are exact
  fp32; the flow net's convolutions use TF32 like the rest);
* ``fp32-strict`` (``keep restore --strict-fp32``): TF32 off for convolutions and matmuls alike;
* ``fp16`` / ``bf16``: autocast (thread-local, see ``KEEP._full_precision``) with the ``fp32`` switches.
"""
from __future__ import annotations

import torch


def cuda_tf32_flags() -> tuple:
    """(cuDNN convolutions may use TF32, CUDA matmuls may use TF32)."""
    return torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32


def configure_cuda_precision(precision: str, device: torch.device) -> None:
    """Set the TF32 switches for a run on ``device`` from its ``precision``; call it before the run
    starts its threads. On other devices nothing is changed (the switches only act on CUDA)."""
    if torch.device(device).type != "cuda":
        return
    strict = precision == "fp32-strict"
    torch.backends.cudnn.allow_tf32 = not strict
    torch.backends.cuda.matmul.allow_tf32 = False
