"""The KEEP network (ECCV 2024): Kalman-inspired feature propagation for video face super-resolution.

Submodule names are the release's (v0.1.0): ``position_emb``, ``flownet``, ``kalman_filter``,
``hq_encoder``, ``encoder``, ``quantize``, ``generator``, ``feat_emb``, ``ft_layers``,
``idx_pred_layer``, ``cross_fuse`` (CFA), ``fuse_convs_dict`` (CFT); the v1.0.0 names
``cfa.*`` / ``cft.*`` are mapped by :mod:`keep.checkpoint`.

One window of T frames, in the release's order of operations:

1. flows from frame t to frame t-1 for every t (one batch of pairs, no gradient);
2. LQ encoder on all frames at once -> observed codes z_obs, plus encoder taps for CFT;
3. Kalman gains for the whole window at once (:mod:`keep.archs.kalman`);
4. per frame, in order: z = z_obs (first frame of a stream) or the Kalman update of z_obs with
   E_H(warp(previous output)); code transformer -> top-1 code -> codebook vectors -> generator with
   CFT (LQ encoder features of that frame) and CFA (previous frame's decoder features).

Streaming: :class:`KalmanState` carries what the next window needs, so a clip can be restored window
by window with memory for one window only (:meth:`KEEP.restore_window`).
"""
from __future__ import annotations

from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from keep.archs.classical_flow import CLASSICAL_FLOWS, ClassicalFlow
from keep.archs.flow import FlowEstimator
from keep.archs.fusion import CFABlock, CFTBlock
from keep.archs.kalman import GainContext, KalmanFilterNet
from keep.archs.transformer import CodeTransformerMixin
from keep.archs.vqgan import Encoder, Generator, VectorQuantizer
from keep.archs.warp import flow_warp
from keep.registry import ARCHS


@dataclass
class KalmanState:
    """Recurrent state carried from one window to the next (all tensors batch-first, batch B).

    prev_input:  (B, 3, H, W) last input frame of the previous window (the flow into the next
                 window's first frame starts from it), in [-1, 1] at network resolution.
    prev_output: (B, 3, H, W) last restored frame (the state prediction warps it).
    prev_feats:  {size: (B, C, h, w)} last frame's decoder features after CFA, per CFA scale.
    gain_context: anchor and previous frame's inputs to each uncertainty block (see
                 :class:`keep.archs.kalman.GainContext`); ``anchor_codes`` / ``prev_codes`` are
                 their first entries as code maps. In causal mode it also holds the temporal
                 attention's key/value cache of the last ``causal_window - 1`` frames.
    frames_seen: number of frames restored so far in this stream.
    """
    prev_input: torch.Tensor
    prev_output: torch.Tensor
    prev_feats: Dict[str, torch.Tensor]
    gain_context: GainContext
    frames_seen: int

    @property
    def anchor_codes(self) -> torch.Tensor:
        """Observed codes (B, C, h, w) of the stream's first frame (the ST-attention anchor)."""
        return _tokens_to_map(self.gain_context.anchor[0], self._side())

    @property
    def prev_codes(self) -> torch.Tensor:
        """Observed codes (B, C, h, w) of the last frame seen."""
        return _tokens_to_map(self.gain_context.prev[0], self._side())

    def _side(self) -> int:
        return int(round(self.gain_context.anchor[0].shape[1] ** 0.5))

    def batch_signature(self) -> Tuple:
        """What states must share to be stacked: the causal key/value cache's length per block (the
        causal mask is one for the whole batch), None without a cache."""
        temporal = self.gain_context.temporal
        return (None if temporal is None else tuple(int(k.shape[1]) for k, _ in temporal),)

    @staticmethod
    def stack(states: Sequence["KalmanState"]) -> "KalmanState":
        """States of batch 1 (or any) -> one state whose batch is theirs in order, every field carried,
        the causal cache included (so a stacked causal stream keeps its attention span). All must have
        one :meth:`batch_signature`. ``frames_seen`` is the first state's; :meth:`split` takes the
        per-item counts."""
        states = list(states)
        signatures = {s.batch_signature() for s in states}
        if len(signatures) != 1:
            raise ValueError(f"states with different causal cache lengths cannot be stacked: {sorted(signatures)}")
        cat = lambda tensors: torch.cat(list(tensors), dim=0)  # noqa: E731
        first = states[0]
        blocks = range(len(first.gain_context.anchor))
        context = GainContext([cat(s.gain_context.anchor[i] for s in states) for i in blocks],
                              [cat(s.gain_context.prev[i] for s in states) for i in blocks],
                              None if first.gain_context.temporal is None else
                              # (B*N, L, inner), item-major: UncertaintyBlock.forward_causal's reshape(b * n, ...)
                              [(cat(s.gain_context.temporal[i][0] for s in states),
                                cat(s.gain_context.temporal[i][1] for s in states))
                               for i in range(len(first.gain_context.temporal))])
        return KalmanState(cat(s.prev_input for s in states), cat(s.prev_output for s in states),
                           {k: cat(s.prev_feats[k] for s in states) for k in first.prev_feats}, context,
                           first.frames_seen)

    def split(self, frames_seen: Optional[Sequence[int]] = None) -> List["KalmanState"]:
        """The inverse of :meth:`stack`: one state of batch 1 per item (``frames_seen[i]`` each, default
        this state's). Views of this state's tensors (restore_window never writes into a state)."""
        items = self.prev_input.shape[0]
        seen = [self.frames_seen] * items if frames_seen is None else list(frames_seen)
        if len(seen) != items:
            raise ValueError(f"{len(seen)} frame counts for a state of {items} items")

        def take(tensor: torch.Tensor, i: int) -> torch.Tensor:
            rows = tensor.shape[0] // items   # 1, or N tokens per item for the causal cache
            return tensor[i * rows:(i + 1) * rows]
        temporal = self.gain_context.temporal
        return [KalmanState(take(self.prev_input, i), take(self.prev_output, i),
                            {k: take(v, i) for k, v in self.prev_feats.items()},
                            GainContext([take(a, i) for a in self.gain_context.anchor],
                                        [take(p, i) for p in self.gain_context.prev],
                                        None if temporal is None else [(take(k, i), take(v, i)) for k, v in temporal]),
                            seen[i])
                for i in range(items)]

    def detach(self) -> "KalmanState":
        """A copy cut from the autograd graph (truncated back-propagation across windows)."""
        return KalmanState(self.prev_input.detach(), self.prev_output.detach(),
                           {k: v.detach() for k, v in self.prev_feats.items()},
                           GainContext([a.detach() for a in self.gain_context.anchor],
                                       [p.detach() for p in self.gain_context.prev],
                                       None if self.gain_context.temporal is None else
                                       [(k.detach(), v.detach()) for k, v in self.gain_context.temporal]),
                           self.frames_seen)


def _at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    """fp16/bf16 -> fp32; fp32 and fp64 unchanged (an fp64 run is the numerics reference)."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def _tokens_to_map(tokens: torch.Tensor, side: int) -> torch.Tensor:
    return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], side, side)


@dataclass
class KEEPOutput:
    """Everything one window produces (returned in training mode or with ``return_intermediates``).

    frames:  (B, T, 3, H, W) restored frames, unbounded (clamp to [-1, 1] for display).
    logits:  (B, T, N, K) code logits per token (N = h*w tokens, K codebook size); stage II's CE.
    indices: (B, T, N) int64 chosen code per token.
    z_obs:   (B, T, C, h, w) LQ encoder output (observed state); stage II's feature loss.
    gains:   (B, T, 1, h, w) Kalman gain (weight of the predicted state), None without propagation.
    flows:   (B, P, 2, H, W) flows used, frame t -> t-1 in pixels (P = T-1 from a fresh state, T with
             a carried one), None without propagation.
    gen_feats: {size: (B, T, C, h, w)} generator features after CFT/CFA at the requested scales.
    state:   state after the window's last frame (None without propagation).
    """
    frames: torch.Tensor
    logits: torch.Tensor
    indices: torch.Tensor
    z_obs: torch.Tensor
    gains: Optional[torch.Tensor] = None
    flows: Optional[torch.Tensor] = None
    gen_feats: Dict[str, torch.Tensor] = field(default_factory=dict)
    state: Optional[KalmanState] = None


@ARCHS.register()
class KEEP(nn.Module, CodeTransformerMixin):
    """KEEP video face restoration network.

    Defaults are the released configuration (158.5 M parameters, 896 state-dict keys). The flow
    network is a submodule (its weights are in the checkpoint). Pure module: no file I/O, no
    freezing; the caller decides eval/train mode and gradients.

    Args (shape): img_size, nf, ch_mult, res_blocks, attn_resolutions (VQGAN); codebook_size,
    emb_dim; dim_embd, n_head, n_layers (code transformer); connect_list (CFT sizes),
    cross_fuse_list, cross_fuse_nhead, cross_fuse_dim (CFA sizes / heads / head width);
    num_uncertainty_layers, kalman_attn_heads, kalman_attn_head_dim (Kalman filter);
    flow_type ("gmflow", or "dis" / "farneback": :mod:`keep.archs.classical_flow`), flow_kwargs.
    Behaviour: cft_weight (w of CFT, 1 in the release), zero_init of CFT/CFA ("official" or "last",
    see :mod:`keep.archs.fusion`), mask_ratio (training only: fraction of observed tokens zeroed
    before the Kalman filter; 0 in the release).
    Causal mode: causal (default mode of the gain's temporal attention: False = the release's,
    window-wide; True = only the current and the previous ``causal_window - 1`` frames, for live
    restoration; see :mod:`keep.archs.kalman`), causal_window (the training clip length, 8). Neither
    adds parameters; both can be overridden per call (``causal=`` of :meth:`restore_window`).
    """

    def __init__(self, img_size: int = 512, nf: int = 64, ch_mult: Sequence[int] = (1, 2, 2, 4, 4, 8),
                 res_blocks: int = 2, attn_resolutions: Sequence[int] = (16,), codebook_size: int = 1024,
                 emb_dim: int = 256, dim_embd: int = 512, n_head: int = 8, n_layers: int = 9,
                 connect_list: Sequence[str] = ("16", "32", "64"), cross_fuse_list: Sequence[str] = ("16", "32"),
                 cross_fuse_nhead: int = 4, cross_fuse_dim: int = 256, num_uncertainty_layers: int = 3,
                 kalman_attn_heads: int = 8, kalman_attn_head_dim: int = 48, flow_type: str = "gmflow",
                 flow_kwargs: Optional[dict] = None, cft_weight: float = 1.0, zero_init: str = "last",
                 mask_ratio: float = 0.0,
                 causal: bool = False, causal_window: int = 8, kalman_init: str = "default"):
        super().__init__()
        if flow_type not in ("gmflow",) + CLASSICAL_FLOWS:
            raise ValueError(f"flow_type must be 'gmflow' (the released flow net) or a classical flow "
                             f"{CLASSICAL_FLOWS} (training without GMFlow weights), got {flow_type!r}")
        if not 0.0 <= mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
        shape = dict(nf=nf, emb_dim=emb_dim, ch_mult=ch_mult, res_blocks=res_blocks, img_size=img_size,
                     attn_resolutions=attn_resolutions)
        self.img_size, self.emb_dim, self.cft_weight, self.mask_ratio = img_size, emb_dim, cft_weight, mask_ratio
        self.connect_list = [str(s) for s in connect_list]
        self.cross_fuse_list = [str(s) for s in cross_fuse_list]

        self.flownet = (FlowEstimator(**(flow_kwargs or {})) if flow_type == "gmflow"
                        else ClassicalFlow(flow_type, **(flow_kwargs or {})))
        self.kalman_filter = KalmanFilterNet(emb_dim, num_uncertainty_layers, kalman_attn_heads, kalman_attn_head_dim,
                                             causal=causal, window=causal_window, init=kalman_init)
        self.hq_encoder = Encoder(**shape)
        self.encoder = Encoder(**shape)
        self.latent_size = self.encoder.latent_size
        self.quantize = VectorQuantizer(codebook_size, emb_dim)
        self.generator = Generator(**shape)
        self.build_code_transformer(emb_dim, dim_embd, n_head, n_layers, codebook_size, self.latent_size ** 2)
        channels = self.generator.channels
        for size in self.connect_list + self.cross_fuse_list:
            if size not in channels or size not in self.encoder.tap_index:
                raise ValueError(f"fusion size {size} is not a decoder resolution; available: {sorted(channels)}")
        self.cross_fuse = nn.ModuleDict({s: CFABlock(channels[s], cross_fuse_nhead, cross_fuse_dim, zero_init)
                                         for s in self.cross_fuse_list})
        self.fuse_convs_dict = nn.ModuleDict({s: CFTBlock(channels[s], zero_init) for s in self.connect_list})

    # ------------------------------------------------------------------ public API
    def forward(self, x: torch.Tensor, need_upscale: bool = False, flows: Optional[torch.Tensor] = None,
                state: Optional[KalmanState] = None, propagate: bool = True, return_intermediates: bool = False,
                detach_codes: bool = True, feature_scales: Sequence[str] = (), causal: Optional[bool] = None
                ) -> Union[torch.Tensor, KEEPOutput]:
        """Restore one window.

        x: (B, T, 3, H, W) float in [-1, 1], H = W = img_size (or img_size / 4 with ``need_upscale``:
        bilinear x4 first, as the release does for 128-pixel training input).
        flows: optional precomputed flows (B, P, 2, H, W), frame t -> t-1 in pixels (P = T-1 for a
        fresh state, T with ``state``); computed by ``flownet`` otherwise.
        state: carried :class:`KalmanState` (None = fresh, the release's semantics).
        propagate: False restores every frame alone (no Kalman filter, no CFA): the image baseline.
        detach_codes: True (inference, stage III) detaches the quantised codes; False passes
        gradients straight through to the fused state (stage II).
        feature_scales: generator scales whose features to return (temporal regularisers).
        causal: the gain's temporal attention sees past frames only (None = the net's ``causal``).

        Returns (B, T, 3, H, W) unbounded frames in eval mode; a :class:`KEEPOutput` in training mode
        or with ``return_intermediates``.
        """
        out = self._run(x, need_upscale, flows, state, propagate, detach_codes, feature_scales, causal)
        return out if (return_intermediates or self.training) else out.frames

    def restore_window(self, x: torch.Tensor, state: Optional[KalmanState] = None, *, need_upscale: bool = False,
                       flows: Optional[torch.Tensor] = None, propagate: bool = True, causal: Optional[bool] = None
                       ) -> Tuple[torch.Tensor, Optional[KalmanState]]:
        """Restore a window continuing from ``state``; returns (frames (B, T, 3, H, W), new state).

        Restoring T frames in windows of any size, carrying the state, computes the same flows,
        predictions, CFA memories and ST-attention keys (anchor = first frame of the stream) as one
        window over all T. The one exception is the gain's temporal attention, which is non-causal
        and spans the current window only, so gains (and what follows from them) differ unless
        that attention is a no-op. ``state=None`` is the release's forward (the release restarts every
        20-frame chunk, so its anchor is the chunk's first frame; a carried state keeps the stream's).
        With ``propagate=False`` every frame is restored alone, ``state`` is ignored and None returned.

        ``causal=True`` (None = the net's ``causal``): the gain's temporal attention of each frame sees
        only itself and the ``causal_window - 1`` frames before it, the older ones through a key/value
        cache carried in the state. Then no output depends on a later frame, and any split into
        windows (down to :meth:`restore_frame`) gives the same frames as one window, to float rounding.
        Other arguments as in :meth:`forward`.
        """
        out = self._run(x, need_upscale, flows, state, propagate, True, (), causal)
        return out.frames, out.state

    def restore_frame(self, x: torch.Tensor, state: Optional[KalmanState] = None, *, need_upscale: bool = False
                      ) -> Tuple[torch.Tensor, KalmanState]:
        """Live restoration: one frame (B, 3, H, W) in [-1, 1] -> (restored frame (B, 3, H, W), new state),
        in causal mode. Memory and time per frame do not grow with the stream: the state holds the
        previous frame, its decoder features, the anchor's and previous frame's block inputs and the
        key/value cache of the last ``causal_window - 1`` frames."""
        if x.dim() != 4:
            raise ValueError(f"expected one frame (B, 3, H, W), got shape {tuple(x.shape)}")
        out = self._run(x[:, None], need_upscale, None, state, True, True, (), True)
        return out.frames[:, 0], out.state

    def channels_last_(self) -> "KEEP":
        """Put every convolution except the flow net's in channels-last memory format (in place).

        On CPU this saves about a fifth of the encoder / generator time (oneDNN convolutions need no
        layout reorders). The flow net stays NCHW: its global matching amplifies the changed summation
        order (flows moved by up to 2e-2 px in the conformance check, vs 6e-3 px in NCHW).
        """
        for name, child in self.named_children():
            if name != "flownet":
                child.to(memory_format=torch.channels_last)
        return self

    # ------------------------------------------------------------------ internals
    def _check_input(self, x: torch.Tensor, need_upscale: bool) -> torch.Tensor:
        if x.dim() != 5 or x.shape[2] != 3:
            raise ValueError(f"expected frames (B, T, 3, H, W), got shape {tuple(x.shape)}")
        if not x.is_floating_point():
            raise ValueError(f"expected float frames in [-1, 1], got dtype {x.dtype}")
        b, t = x.shape[:2]
        if need_upscale:
            x = F.interpolate(x.flatten(0, 1), scale_factor=4, mode="bilinear", align_corners=False)
            x = x.view(b, t, *x.shape[1:])
        if x.shape[-2:] != (self.img_size, self.img_size):
            hint = " (pass need_upscale=True for 1/4-size input)" if not need_upscale else ""
            raise ValueError(f"frames must be {self.img_size}x{self.img_size} aligned faces, got "
                             f"{tuple(x.shape[-2:])}{hint}")
        return x

    def _flows(self, x: torch.Tensor, state: Optional[KalmanState], flows: Optional[torch.Tensor]) -> torch.Tensor:
        """Flows frame t -> t-1 for every predicted frame, as one batch of pairs: (B, P, 2, H, W)."""
        b, t, _, h, w = x.shape
        pairs = t - 1 if state is None else t
        if flows is not None:
            if tuple(flows.shape) != (b, pairs, 2, h, w):
                raise ValueError(f"flows must be {(b, pairs, 2, h, w)} (frame t -> t-1 for each predicted "
                                 f"frame), got {tuple(flows.shape)}")
            return flows
        if pairs == 0:
            return x.new_zeros(b, 0, 2, h, w)
        frames = x if state is None else torch.cat([state.prev_input[:, None], x], dim=1)
        with torch.no_grad(), self._full_precision(x):  # the flow net is frozen; see _full_precision
            # each frame through the flow backbone once, all pairs in one batch
            out = self.flownet.sequence(_at_least_fp32(frames))
        return _at_least_fp32(out)

    @staticmethod
    @contextmanager
    def _full_precision(x: torch.Tensor):
        """Autocast off for the flow net and the code transformer (both cheap next to the convolutions):
        under bf16/fp16 autocast, global matching (a softmax over 64x64 positions of 128-d correlations)
        loses sub-pixel flow accuracy and near-tied code logits can flip the top-1 code.

        The TF32 switches are not touched here: they are process-wide, and flipping them from this thread
        changed the precision of the detector, parser and upsampler running on other threads (and two
        threads restoring them in turn could leave TF32 on under a flow computation). A run sets them once
        before its threads start (:mod:`keep.precision`): matmuls in true fp32 always, cuDNN convolutions
        in TF32 by default (PyTorch's default, the official inference's) or not (``--strict-fp32``)."""
        with ExitStack() as stack:
            if torch.is_autocast_enabled(x.device.type):   # autocast state is per thread: no race
                stack.enter_context(torch.autocast(x.device.type, enabled=False))
            yield

    def _mask_tokens(self, z: torch.Tensor) -> torch.Tensor:
        """Training-time token dropping: zero a random ``mask_ratio`` of the observed tokens."""
        if not (self.training and self.mask_ratio > 0):
            return z
        keep = torch.rand(*z.shape[:-3], 1, *z.shape[-2:], device=z.device) >= self.mask_ratio
        return z * keep

    def _quantise(self, z: torch.Tensor, detach_codes: bool) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """z (N, C, h, w) -> logits (N, h*w, K), indices (N, h*w), codes (N, C, h, w)."""
        with self._full_precision(z):
            logits = self.code_logits(_at_least_fp32(z))
        # top-1 code per token (the release takes top-1 of the softmax: the same index)
        indices = logits.argmax(dim=-1)
        quant = self.quantize.lookup(indices, z.shape[-2:])
        quant = quant.detach() if detach_codes else z + (quant - z).detach()
        return logits, indices, quant

    def _decode(self, quant: torch.Tensor, taps: Dict[str, torch.Tensor], memory: Optional[Dict[str, torch.Tensor]],
                feats: Dict[str, List[torch.Tensor]]) -> torch.Tensor:
        """Generator with CFT (encoder taps of the same frames) and, when ``memory`` is a dict, CFA
        against the previous frame's features (memory is updated in place; a missing entry means
        this is the stream's first frame, whose features are only stored)."""
        def fuse(size: str, x: torch.Tensor) -> torch.Tensor:
            if size in self.fuse_convs_dict:
                x = self.fuse_convs_dict[size](taps[size], x, self.cft_weight)
            if memory is not None and size in self.cross_fuse:
                if size in memory:
                    x = self.cross_fuse[size](x, memory[size])
                memory[size] = x
            if size in feats:
                feats[size].append(x)
            return x
        return self.generator(quant, fuse)

    def _frame(self, z_obs: torch.Tensor, taps: Dict[str, torch.Tensor], memory: Dict[str, torch.Tensor],
               feats: Dict[str, List[torch.Tensor]], detach_codes: bool, prev_out: Optional[torch.Tensor] = None,
               flow: Optional[torch.Tensor] = None, gain: Optional[torch.Tensor] = None
               ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One frame of the recurrence (also the per-frame graphs of keep/deploy/graphs.py): observed codes
        (B, C, h, w) and CFT taps of the frame; with ``prev_out`` (the previous restored frame) its
        prediction is fused with the gain, else the observation is used alone (first frame of a stream).
        ``memory`` (CFA) is updated in place. Returns (restored frame, logits, indices)."""
        z = z_obs
        if prev_out is not None:
            # predict: E_H(warp(y_{t-1})) (Eq. 12); update: gain on the prediction (see kalman.py)
            z_pred, _ = self.hq_encoder(flow_warp(prev_out.detach(), flow))
            z = self.kalman_filter.update(z, z_pred, gain)
        logits, indices, quant = self._quantise(z, detach_codes)
        return self._decode(quant, taps, memory, feats), logits, indices

    def _run(self, x: torch.Tensor, need_upscale: bool, flows: Optional[torch.Tensor],
             state: Optional[KalmanState], propagate: bool, detach_codes: bool,
             feature_scales: Sequence[str], causal: Optional[bool] = None) -> KEEPOutput:
        x = self._check_input(x, need_upscale)
        b, t = x.shape[:2]
        if state is not None and propagate and state.prev_output.shape != x[:, 0].shape:
            raise ValueError(f"the carried state holds frames {tuple(state.prev_output.shape)} but this window's "
                             f"frames are {tuple(x[:, 0].shape)}; start a new stream with state=None")
        feats: Dict[str, List[torch.Tensor]] = {str(s): [] for s in feature_scales}
        for size in feats:
            if size not in self.generator.fuse_index:
                raise ValueError(f"feature scale {size} is not a decoder resolution: "
                                 f"{sorted(self.generator.fuse_index)}")

        # LQ encoder over the whole window at once; CFT taps are detached as in the release
        z_flat, taps_flat = self.encoder(x.flatten(0, 1), self.connect_list)
        z_obs = self._mask_tokens(z_flat.view(b, t, *z_flat.shape[1:]))
        taps = {s: f.detach().view(b, t, *f.shape[1:]) for s, f in taps_flat.items()}

        if not propagate:  # every frame alone: frame-0 semantics, batched over B*T
            logits, indices, quant = self._quantise(z_obs.flatten(0, 1), detach_codes)
            frames = self._decode(quant, {s: f.flatten(0, 1) for s, f in taps.items()}, None, feats)
            return KEEPOutput(_at_least_fp32(frames).view(b, t, *frames.shape[1:]), logits.view(b, t, *logits.shape[1:]),
                              indices.view(b, t, -1), z_obs,
                              gen_feats={s: v[0].view(b, t, *v[0].shape[1:]) for s, v in feats.items()})

        flows = self._flows(x, state, flows)
        gains, context = self.kalman_filter.gains(z_obs, None if state is None else state.gain_context, causal)
        prev_out = None if state is None else state.prev_output
        memory = {} if state is None else dict(state.prev_feats)
        offset = 1 if state is None else 0  # flows[:, i - offset] leads into frame i
        outs, all_logits, all_indices = [], [], []
        for i in range(t):
            prev_out, logits, indices = self._frame(
                z_obs[:, i], {s: f[:, i] for s, f in taps.items()}, memory, feats, detach_codes,
                prev_out, None if prev_out is None else flows[:, i - offset], gains[:, i])
            outs.append(prev_out)
            all_logits.append(logits)
            all_indices.append(indices)
        new_state = KalmanState(x[:, -1].clone(), prev_out, memory, context,
                                t + (0 if state is None else state.frames_seen))
        return KEEPOutput(_at_least_fp32(torch.stack(outs, 1)), torch.stack(all_logits, 1), torch.stack(all_indices, 1), z_obs,
                          gains, flows, {s: torch.stack(v, 1) for s, v in feats.items()}, new_state)
