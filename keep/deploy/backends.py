"""Run the exported graph set (keep/deploy/graphs.py) with ONNX Runtime or OpenVINO.

:class:`ExportedNetwork` has the network's inference interface (``img_size``, ``restore_window``,
``restore_frame``, torch tensors and :class:`KalmanState` in and out), so the restore and live
pipelines call it where they call the PyTorch network; only the network call differs. Its
``restore_window`` is ``KEEP._run`` driven through the graphs: the same flows, window-wide gains and
per-frame recurrence.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch

from keep.archs.kalman import GainContext
from keep.archs.keep_net import KalmanState
from keep.deploy.export import MANIFEST
from keep.deploy.graphs import gain_state_names
from keep.deploy.options import BACKENDS

EXTRAS = {"onnxruntime": "onnx", "openvino": "openvino"}


class BackendError(ValueError):
    """A backend cannot run as asked (package missing, precision or device unsupported): one line."""


def require(backend: str):
    """Import the backend's package, or a one-line error naming the extra that installs it."""
    try:
        if backend == "onnxruntime":
            import onnxruntime
            return onnxruntime
        import openvino
        return openvino
    except ImportError:
        raise BackendError(f"--backend {backend} needs the {backend} package: pip install -e \".[{EXTRAS[backend]}]\" "
                           f"(or pip install keep-vsr[{EXTRAS[backend]}])") from None


class _OrtRunner:
    """One onnxruntime session per graph. ``device`` cpu: CPU provider; cuda: TensorRT (if the build has
    it), then CUDA (onnxruntime-gpu; unmeasured here, no GPU)."""

    def __init__(self, folder: Path, manifest: dict, device: str, precision: str, threads: int):
        ort = require("onnxruntime")
        if precision == "bf16":
            raise BackendError("onnxruntime has no bf16 kernels on this path; use --backend openvino --bf16, "
                               "or --fp16 on --device cuda")
        available = ort.get_available_providers()
        if device == "cuda":
            if "CUDAExecutionProvider" not in available:
                raise BackendError("--device cuda with --backend onnxruntime needs onnxruntime-gpu "
                                   "(pip install onnxruntime-gpu); this onnxruntime has " + ", ".join(available))
            providers: list = []
            if "TensorrtExecutionProvider" in available:
                providers.append(("TensorrtExecutionProvider", {"trt_fp16_enable": precision == "fp16",
                                                                "trt_engine_cache_enable": True,
                                                                "trt_engine_cache_path": str(folder / "trt")}))
            providers += ["CUDAExecutionProvider", "CPUExecutionProvider"]
        else:
            providers = ["CPUExecutionProvider"]
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.log_severity_level = 3
        self.sessions = {name: ort.InferenceSession(str(folder / g["file"]), options, providers=providers)
                         for name, g in manifest["graphs"].items()}
        used = self.sessions["frame_step"].get_providers()[0]
        self.description = f"onnxruntime {ort.__version__} {used}, {manifest['precision']} graphs"

    def run(self, name: str, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        session = self.sessions[name]
        outputs = session.run(None, feeds)
        return {o.name: v for o, v in zip(session.get_outputs(), outputs)}


class _OpenVinoRunner:
    """One compiled OpenVINO model per graph on the CPU. The precision is OpenVINO's inference
    precision hint (bf16 where the CPU has native bf16: AMX or AVX512-BF16; fp16 where it has AMX-FP16);
    fp32 is set explicitly because OpenVINO defaults to bf16 on such CPUs. The flow graph always runs
    in fp32 (global matching loses sub-pixel accuracy in reduced precision, see KEEP._full_precision)."""

    HINTS = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}

    def __init__(self, folder: Path, manifest: dict, device: str, precision: str, threads: int):
        ov = require("openvino")
        if device == "cuda":
            raise BackendError("--backend openvino runs on the CPU; --device cuda is for --backend onnxruntime "
                               "(onnxruntime-gpu) or torch")
        core = ov.Core()
        capabilities = core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
        if precision != "fp32" and precision.upper() not in capabilities:
            raise BackendError(f"this CPU has no native {precision} for OpenVINO (capabilities: "
                               f"{', '.join(capabilities)}); run in fp32")
        self.compiled = {}
        for name, g in manifest["graphs"].items():
            hint = "f32" if name == "flow" else self.HINTS[precision]
            config = {"INFERENCE_PRECISION_HINT": hint, "INFERENCE_NUM_THREADS": threads}
            self.compiled[name] = core.compile_model(str(folder / g["file"]), "CPU", config)
        cpu = core.get_property("CPU", "FULL_DEVICE_NAME")
        self.description = f"OpenVINO {ov.__version__.split('-')[0]} CPU plugin ({cpu}), {precision}"

    def run(self, name: str, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        model = self.compiled[name]
        result = model(feeds)
        return {out.get_any_name(): result[out] for out in model.outputs}


def _np(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().float().cpu().numpy())


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))


class ExportedNetwork:
    """The graph set in ``folder`` behind the KEEP network's inference interface.

    backend: "onnxruntime" or "openvino"; device: "cpu" or "cuda" (onnxruntime-gpu); precision:
    "fp32", "fp16" or "bf16" (see the runners); threads: intra-op threads (default: torch's count).
    """

    def __init__(self, folder: Path, backend: str, device: str = "cpu", precision: str = "fp32",
                 threads: Optional[int] = None):
        folder = Path(folder)
        self.manifest = json.loads((folder / MANIFEST).read_text())
        m = self.manifest
        self.img_size = int(m["img_size"])
        self.causal = bool(m["causal"])
        self.connect_list: List[str] = list(m["connect_list"])
        self.cross_fuse_list: List[str] = list(m["cross_fuse_list"])
        self.blocks = int(m["uncertainty_blocks"])
        threads = threads or torch.get_num_threads()
        runner = {"onnxruntime": _OrtRunner, "openvino": _OpenVinoRunner}.get(backend)
        if runner is None:
            raise BackendError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        self.backend, self.precision = backend, precision
        self.runner = runner(folder, m, device, precision, threads)

    @property
    def description(self) -> str:
        """Which runtime, execution provider and precision run the network (for run summaries)."""
        return self.runner.description

    def _gain_state(self, context: GainContext) -> Dict[str, np.ndarray]:
        tensors = list(context.anchor) + list(context.prev)
        if self.causal:
            if context.temporal is None:
                raise BackendError("this state has no causal key/value cache (it comes from a non-causal run)")
            tensors += [t for pair in context.temporal for t in pair]
        return {n: _np(t) for n, t in zip(gain_state_names(self.blocks, self.causal), tensors)}

    def _gain_context(self, out: Dict[str, np.ndarray]) -> GainContext:
        k = self.blocks
        temporal = ([(_t(out[f"new_key_{i}"]), _t(out[f"new_value_{i}"])) for i in range(k)]
                    if self.causal else None)
        return GainContext([_t(out[f"new_anchor_{i}"]) for i in range(k)],
                           [_t(out[f"new_prev_{i}"]) for i in range(k)], temporal)

    def restore_window(self, x: torch.Tensor, state: Optional[KalmanState] = None, *, need_upscale: bool = False,
                       flows: Optional[torch.Tensor] = None, propagate: bool = True, causal: Optional[bool] = None
                       ) -> Tuple[torch.Tensor, Optional[KalmanState]]:
        """As :meth:`KEEP.restore_window` (x (B, T, 3, S, S) in [-1, 1]); ``causal`` must match the graphs."""
        if need_upscale:
            raise BackendError("need_upscale is a PyTorch-only option: give frames at the network's size")
        if causal is not None and bool(causal) != self.causal:
            raise BackendError(f"these graphs were exported with causal={self.causal}, asked causal={causal}")
        if x.dim() != 5 or tuple(x.shape[2:]) != (3, self.img_size, self.img_size):
            raise ValueError(f"expected frames (B, T, 3, {self.img_size}, {self.img_size}), got {tuple(x.shape)}")
        run = self.runner.run
        frames = _np(x)
        b, t = frames.shape[:2]
        obs = run("observe", {"frames": frames.reshape(b * t, *frames.shape[2:])})
        z = obs["z_obs"].reshape(b, t, *obs["z_obs"].shape[1:])
        taps = {s: obs[f"tap_{s}"].reshape(b, t, *obs[f"tap_{s}"].shape[1:]) for s in self.connect_list}
        if not propagate:   # every frame alone, batched over B*T (KEEP._run's image baseline)
            out = run("frame_first", {"z_obs": obs["z_obs"], **{f"tap_{s}": obs[f"tap_{s}"] for s in self.connect_list}})
            return _t(out["frame"].reshape(b, t, *out["frame"].shape[1:])), None
        if state is not None and tuple(state.prev_output.shape) != (b, 3, self.img_size, self.img_size):
            raise ValueError(f"the carried state holds frames {tuple(state.prev_output.shape)} but this window's "
                             f"frames are {(b, 3, self.img_size, self.img_size)}; start a new stream with state=None")
        if state is None:
            pairs = frames if t > 1 else None
            gains_out = run("gains_first", {"z_obs": z})
            prev_out, memory, offset = None, {}, 1
        else:
            pairs = np.concatenate([_np(state.prev_input)[:, None], frames], axis=1)
            gains_out = run("gains_step", {"z_obs": z, **self._gain_state(state.gain_context)})
            prev_out = _np(state.prev_output)
            memory = {s: _np(state.prev_feats[s]) for s in self.cross_fuse_list}
            offset = 0
        if flows is not None:   # given flows (B, P, 2, S, S), frame t -> t-1, as KEEP.restore_window takes them
            expected = (b, t - offset, 2, self.img_size, self.img_size)
            if tuple(flows.shape) != expected:
                raise ValueError(f"flows must be {expected}, got {tuple(flows.shape)}")
            flow = _np(flows)
        else:
            flow = None if pairs is None else run("flow", {"frames": pairs})["flows"]
        gains = gains_out["gains"]
        outs, self.last_indices = [], []
        for i in range(t):
            feeds = {"z_obs": z[:, i], **{f"tap_{s}": taps[s][:, i] for s in self.connect_list}}
            if prev_out is None:
                out = run("frame_first", feeds)
            else:
                feeds.update({"gain": gains[:, i], "flow": flow[:, i - offset], "prev_output": prev_out,
                              **{f"memory_{s}": memory[s] for s in self.cross_fuse_list}})
                out = run("frame_step", feeds)
            prev_out = out["frame"]
            self.last_indices.append(out["indices"])   # chosen codes per frame (B, h*w), for precision studies
            memory = {s: out[f"new_memory_{s}"] for s in self.cross_fuse_list}
            outs.append(prev_out)
        new_state = KalmanState(_t(frames[:, -1]), _t(prev_out), {s: _t(v) for s, v in memory.items()},
                                self._gain_context(gains_out), t + (0 if state is None else state.frames_seen))
        return _t(np.stack(outs, 1)), new_state

    def restore_frame(self, x: torch.Tensor, state: Optional[KalmanState] = None, *, need_upscale: bool = False
                      ) -> Tuple[torch.Tensor, KalmanState]:
        """As :meth:`KEEP.restore_frame`: one frame (B, 3, S, S), causal graphs only."""
        if not self.causal:
            raise BackendError("live restoration needs graphs exported with causal=True")
        if x.dim() != 4:
            raise ValueError(f"expected one frame (B, 3, H, W), got shape {tuple(x.shape)}")
        frames, state = self.restore_window(x[:, None], state, need_upscale=need_upscale)
        return frames[:, 0], state
