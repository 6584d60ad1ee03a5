"""Export a KEEP checkpoint as the ONNX graph set of keep/deploy/graphs.py, with a manifest.

The folder is written under a temporary name beside its destination and renamed into place, so a
reader (or a concurrent exporter) sees either nothing or a complete set.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Dict, Optional, Tuple

import torch

from keep.deploy.graphs import OPSET, dynamic_axes, graph_specs

MANIFEST = "manifest.json"
FORMAT = "keep-onnx-2"      # bump when the graph set or its names change (cache keys include it)
PRECISIONS = ("fp32", "fp16", "bf16")


def example_inputs(net, causal: bool) -> Dict[str, Tuple[torch.Tensor, ...]]:
    """Inputs to trace each graph with (batch 1, two frames): the LQ encoder's real outputs, state
    tensors of the right shapes (tracing records the operations, not the values)."""
    size = net.img_size
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(1, 2, 3, size, size, generator=gen) * 2 - 1
    z, taps = net.encoder(x[:, 0], net.connect_list)
    tap_list = tuple(taps[s] for s in net.connect_list)
    z_obs = torch.stack([z, z.flip(-1)], dim=1)
    tokens = z.flatten(2).transpose(1, 2)                                   # (1, h*w, C)
    blocks = net.kalman_filter.uncertainty_estimator
    gain_state = [tokens] * (2 * len(blocks))                                # anchor_k, prev_k
    if causal:
        inner = blocks[0].attn_temp.to_k.out_features
        gain_state += [torch.randn(tokens.shape[1], 1, inner, generator=gen)] * (2 * len(blocks))
    memory = tuple(torch.randn(1, net.generator.channels[s], int(s), int(s), generator=gen)
                   for s in net.cross_fuse_list)
    gain = torch.full((1, 1) + tuple(z.shape[-2:]), 0.5)
    flow = torch.randn(1, 2, size, size, generator=gen)
    return {
        "observe": (x[:, 0],),
        "flow": (x,),
        "gains_first": (z_obs,),
        "gains_step": (z_obs,) + tuple(gain_state),
        "frame_first": (z,) + tap_list,
        "frame_step": (z,) + tap_list + (gain, flow, x[:, 1]) + memory,
    }


def _to_fp16(path: Path) -> None:
    """fp16 weights and arithmetic, fp32 inputs and outputs (onnxruntime's converter); the flow graph
    stays fp32 (global matching loses sub-pixel accuracy in half precision, see KEEP._full_precision)."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16
    model = convert_float_to_float16(onnx.load(str(path)), keep_io_types=True)
    onnx.save(model, str(path))


def is_export(folder: Path) -> bool:
    """Whether ``folder`` holds a graph set written by :func:`export_graphs` (what --overwrite may replace)."""
    try:
        return json.loads((Path(folder) / MANIFEST).read_text()).get("format", "").startswith("keep-onnx")
    except (OSError, ValueError, AttributeError):
        return False


def export_graphs(net, folder: Path, causal: bool, precision: str = "fp32",
                  extra: Optional[dict] = None, replace: bool = False) -> dict:
    """Write every graph and ``manifest.json`` into the new folder ``folder``; returns the manifest.
    ``folder`` must not exist, or (``replace``) must be an earlier export, swapped out only once the
    new set is complete. ``extra`` goes into the manifest (checkpoint name and sha256)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "bf16":
        raise ValueError("bf16 is a runtime precision, not a file format: export fp32 and run it with "
                         "OpenVINO's bf16 (`keep restore --backend openvino --bf16`)")
    if not hasattr(net, "flownet") or not hasattr(net.flownet, "sequence"):
        raise ValueError("only networks with the GMFlow flow net can be exported (classical flows are OpenCV)")
    net = net.float().eval().to(memory_format=torch.contiguous_format)
    folder = Path(folder)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".partial", dir=folder.parent))
    try:
        graphs = {}
        with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")   # tracer warnings about Python ints that are constants here
            samples = example_inputs(net, causal)
            for name, (module, inputs, outputs) in graph_specs(net, causal).items():
                path = tmp / f"{name}.onnx"
                torch.onnx.export(module, samples[name], str(path), input_names=inputs, output_names=outputs,
                                  dynamic_axes=dynamic_axes(name, inputs, outputs), opset_version=OPSET,
                                  dynamo=False, do_constant_folding=True)
                if precision == "fp16" and name != "flow":
                    _to_fp16(path)
                axes = dynamic_axes(name, inputs, outputs)
                results = module(*samples[name])
                results = results if isinstance(results, tuple) else (results,)
                graphs[name] = {"file": path.name, "inputs": _shapes(inputs, samples[name], axes),
                                "outputs": _shapes(outputs, results, axes)}
        manifest = {"format": FORMAT, "opset": OPSET, "precision": precision, "causal": causal,
                    "img_size": int(net.img_size), "causal_window": int(net.kalman_filter.window),
                    "connect_list": list(net.connect_list), "cross_fuse_list": list(net.cross_fuse_list),
                    "uncertainty_blocks": len(net.kalman_filter.uncertainty_estimator),
                    "torch": torch.__version__, "graphs": graphs, **(extra or {})}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
        os.chmod(tmp, 0o755)
        old = None
        if replace and folder.exists():
            if not is_export(folder):
                raise FileExistsError(f"{folder} is not a KEEP ONNX export; not replacing it")
            old = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".old", dir=folder.parent))
            os.rename(folder, old / "set")
        os.rename(tmp, folder)   # fails if folder appeared meanwhile: never over someone's files
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def _shapes(names, tensors, axes) -> Dict[str, list]:
    """name -> shape, a dynamic axis by its name ("batch", "window", ...), the others as numbers."""
    return {n: [axes.get(n, {}).get(i, d) for i, d in enumerate(t.shape)] for n, t in zip(names, tensors)}
