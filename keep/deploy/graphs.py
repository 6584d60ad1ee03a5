"""The KEEP network cut into ONNX-exportable graphs whose recurrent state is named inputs and outputs.

``KEEP.restore_window`` does, per window: flows (GMFlow over the window, plus the carried previous
input), LQ encoder over all frames, Kalman gains over the whole window at once (their temporal
attention spans the window), then per frame the update / code transformer / generator with CFA
(keep/archs/keep_net.py ``_run``). The graphs follow that cut, so a runtime reproduces
``restore_window`` for any window length (down to ``restore_frame``, one frame per call):

==============  =============================================================================
observe         frames (N, 3, S, S) -> z_obs (N, C, h, w), tap_<size> (CFT features)
flow            frames (B, L, 3, S, S), L >= 2 -> flows (B, L-1, 2, S, S): frame l+1 -> l, pixels
gains_first     z_obs (B, T, C, h, w) -> gains (B, T, 1, h, w) + new_<gain state> (fresh stream)
gains_step      z_obs (B, T, C, h, w) + <gain state> -> gains + new_<gain state> (carried)
frame_first     z_obs (B, C, h, w), tap_<size> -> frame (B, 3, S, S), new_memory_<size>, indices
frame_step      z_obs, tap_<size>, gain (B, 1, h, w), flow (B, 2, S, S), prev_output (B, 3, S, S),
                memory_<size> -> frame, new_memory_<size>, indices (B, h*w) int64: the chosen codes
==============  =============================================================================

Gain state: ``anchor_<k>`` / ``prev_<k>`` (B, h*w, C) per uncertainty block k (the anchor frame's and
the last frame's block inputs, keep/archs/kalman.py ``GainContext``); causal graphs add
``key_<k>`` / ``value_<k>`` (B*h*w, L, inner), the key/value cache of the last L <= window-1 frames.
Every output named ``new_X`` is the input ``X`` of the next call. Batch, window length T, pair
count L and cache length are dynamic axes. The modules below only call the network's own methods.
"""
from __future__ import annotations

from typing import Dict, List, Tuple

import torch
from torch import nn

from keep.archs.kalman import GainContext

OPSET = 17   # grid_sample (GMFlow's warp and the prediction's) needs opset >= 16


class Observe(nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, frames: torch.Tensor):
        z, taps = self.net.encoder(frames, self.net.connect_list)
        return (z,) + tuple(taps[s] for s in self.net.connect_list)


class Flow(nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.net.flownet.sequence(frames)


class Gains(nn.Module):
    """``kalman_filter.gains`` with its context flattened into tensors (fresh when ``carried`` is False)."""

    def __init__(self, net, carried: bool, causal: bool):
        super().__init__()
        self.net, self.carried, self.causal = net, carried, causal
        self.blocks = len(net.kalman_filter.uncertainty_estimator)

    def forward(self, z_obs: torch.Tensor, *state: torch.Tensor):
        context = None
        if self.carried:
            k = self.blocks
            temporal = ([(state[2 * k + 2 * i], state[2 * k + 2 * i + 1]) for i in range(k)]
                        if self.causal else None)
            context = GainContext(list(state[:k]), list(state[k:2 * k]), temporal)
        gains, new = self.net.kalman_filter.gains(z_obs, context, self.causal)
        out = [gains] + list(new.anchor) + list(new.prev)
        if self.causal:
            out += [t for pair in new.temporal for t in pair]
        return tuple(out)


class Frame(nn.Module):
    """One frame of the recurrence (``KEEP._frame``): the first of a stream, or a carried step."""

    def __init__(self, net, carried: bool):
        super().__init__()
        self.net, self.carried = net, carried

    def forward(self, z_obs: torch.Tensor, *rest: torch.Tensor):
        net = self.net
        taps = dict(zip(net.connect_list, rest[:len(net.connect_list)]))
        rest = rest[len(net.connect_list):]
        prev_out = flow = gain = None
        memory: Dict[str, torch.Tensor] = {}
        if self.carried:
            gain, flow, prev_out = rest[:3]
            memory = dict(zip(net.cross_fuse_list, rest[3:]))
        frame, _, indices = net._frame(z_obs, taps, memory, {}, True, prev_out, flow, gain)
        return (frame,) + tuple(memory[s] for s in net.cross_fuse_list) + (indices,)


def gain_state_names(blocks: int, causal: bool) -> List[str]:
    names = [f"anchor_{k}" for k in range(blocks)] + [f"prev_{k}" for k in range(blocks)]
    if causal:
        names += [n for k in range(blocks) for n in (f"key_{k}", f"value_{k}")]
    return names


def graph_specs(net, causal: bool) -> Dict[str, Tuple[nn.Module, List[str], List[str]]]:
    """name -> (module, input names, output names) for every graph of the set."""
    taps = [f"tap_{s}" for s in net.connect_list]
    memory = [f"memory_{s}" for s in net.cross_fuse_list]
    gain_state = gain_state_names(len(net.kalman_filter.uncertainty_estimator), causal)
    new = lambda names: [f"new_{n}" for n in names]  # noqa: E731
    return {
        "observe": (Observe(net), ["frames"], ["z_obs"] + taps),
        "flow": (Flow(net), ["frames"], ["flows"]),
        "gains_first": (Gains(net, False, causal), ["z_obs"], ["gains"] + new(gain_state)),
        "gains_step": (Gains(net, True, causal), ["z_obs"] + gain_state, ["gains"] + new(gain_state)),
        "frame_first": (Frame(net, False), ["z_obs"] + taps, ["frame"] + new(memory) + ["indices"]),
        "frame_step": (Frame(net, True), ["z_obs"] + taps + ["gain", "flow", "prev_output"] + memory,
                       ["frame"] + new(memory) + ["indices"]),
    }


def dynamic_axes(name: str, inputs: List[str], outputs: List[str]) -> Dict[str, Dict[int, str]]:
    """Batch everywhere; window length / pair count on window tensors; cache length on the causal cache."""
    axes: Dict[str, Dict[int, str]] = {}
    for n in inputs + outputs:
        base = n[4:] if n.startswith("new_") else n
        if base.startswith(("key_", "value_")):
            axes[n] = {0: "batch_tokens", 1: "cached" if n == base else "new_cached"}
        elif name == "flow":
            axes[n] = {0: "batch", 1: "frames" if n == "frames" else "pairs"}
        elif name.startswith("gains") and n in ("z_obs", "gains"):
            axes[n] = {0: "batch", 1: "window"}
        else:
            axes[n] = {0: "batch"}
    return axes
