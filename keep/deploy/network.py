"""``--backend``: which runtime runs the network in ``keep restore`` and ``keep live``.

``torch`` is the PyTorch network itself. ``onnxruntime`` / ``openvino`` run the graph set exported
from the same ``--weights`` on first use (keep/deploy/cache.py) through :class:`ExportedNetwork`,
which has the network's ``restore_window`` / ``restore_frame``: the pipelines around it do not change.
Their precision flags: ``--bf16`` / ``--fp16`` select the runtime's reduced precision where the
hardware has it (OpenVINO's CPU inference precision; onnxruntime fp16 on ``--device cuda``).
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch

from keep.deploy.backends import BackendError, ExportedNetwork, require
from keep.deploy.options import BACKENDS


def pipeline_device(backend: str, device: str) -> Optional[torch.device]:
    """Where the pipeline's own tensors live: the CPU for an exported backend (it takes numpy arrays),
    None = the usual resolution for torch."""
    return None if backend == "torch" else torch.device("cpu")


def load_network(weights: str, backend: str, device: str, precision: str, causal: Optional[bool] = None,
                 causal_window: Optional[int] = None) -> Tuple[ExportedNetwork, str]:
    """The exported network of ``weights`` for an onnxruntime/OpenVINO ``backend`` and a one-line
    description of what runs it (runtime, execution provider, precision) for the run summary."""
    if backend not in BACKENDS or backend == "torch":
        raise BackendError(f"load_network is for onnxruntime / openvino, got {backend!r}")
    require(backend)   # a missing package fails before any export
    if device not in ("auto", "cpu", "cuda"):
        raise BackendError(f"--backend {backend} runs on --device cpu or cuda (onnxruntime-gpu), not {device}")
    if backend == "openvino" and device == "auto":
        device = "cpu"
    if device == "auto":
        import onnxruntime
        device = "cuda" if "CUDAExecutionProvider" in onnxruntime.get_available_providers() else "cpu"
    if backend == "onnxruntime" and precision in ("fp16", "bf16") and device == "cpu":
        raise BackendError(f"--{precision} with --backend onnxruntime needs --device cuda; on the CPU use "
                           f"--backend openvino --{precision} (where the CPU has it) or fp32")
    if precision == "fp32-strict":
        precision = "fp32"
    graph_precision = "fp16" if backend == "onnxruntime" and precision == "fp16" else "fp32"
    from keep.deploy.cache import cached_graphs
    folder, exported = cached_graphs(weights, causal, graph_precision, causal_window)
    net = ExportedNetwork(folder, backend, device, precision)
    note = f"network: {net.description}" + (f" (graphs exported to {folder})" if exported else "")
    return net, note
