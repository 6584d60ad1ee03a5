"""GMFlow optical flow (Xu et al., CVPR 2022) in the configuration the KEEP release uses.

KEEP estimates, for every frame t >= 1, the flow from frame t to frame t-1 with a frozen GMFlow and
uses it to warp the previous restored frame onto frame t (the Kalman *prediction* step, paper
Sec. 3.2). The released checkpoint stores GMFlow under ``flownet.model.``; the parameter names of
this module equal the official ones so the checkpoint loads strictly.

Pipeline of :class:`GMFlow` (one scale, no refinement):

1. ``backbone``: a residual CNN maps both images, as one batch, to 1/8-resolution features.
2. A sine position encoding is added per attention window (2x2 windows).
3. ``transformer``: self- and cross-attention inside windows, every second block on windows
   shifted by half a window (Swin), updating both feature maps symmetrically.
4. Global matching: softmax over the correlation of every img0 position with every img1 position;
   the expected img1 coordinate minus the own coordinate is the 1/8-resolution flow.
5. ``feature_flow_attn``: the flow is propagated by self-attention on img0's features, which
   fills in occluded / textureless regions.
6. ``upsampler``: learned convex combination of 3x3 neighbours to full resolution (x8).

Flow convention everywhere: (N, 2, H, W) in pixels, channel 0 = x (right), channel 1 = y (down),
defined on img0's grid and pointing into img1, i.e. ``img0(p) ~ img1(p + flow(p))``.
"""
from __future__ import annotations

import math
from typing import Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from keep.registry import ARCHS

# ImageNet statistics GMFlow normalises its [0, 1] RGB input with.
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)

# Additive score of token pairs from different regions of a shifted window (the official value;
# not -inf, so it must stay -100 to reproduce the released numerics).
_SHIFT_MASK_VALUE = -100.0


# ---------------------------------------------------------------------------------------------
# Backbone
# ---------------------------------------------------------------------------------------------
class ResidualBlock(nn.Module):
    """conv3x3-IN-ReLU-conv3x3-IN-ReLU plus a (projected) skip, then ReLU.

    The skip is a strided 1x1 conv (with bias) + InstanceNorm whenever the stride or the width
    changes, stored as ``downsample.0`` / ``downsample.1`` like the official module.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.norm1 = nn.InstanceNorm2d(out_channels)
        self.norm2 = nn.InstanceNorm2d(out_channels)
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride),
                nn.InstanceNorm2d(out_channels))

    def forward(self, x: Tensor) -> Tensor:
        """(N, Cin, H, W) -> (N, Cout, H/stride, W/stride)."""
        y = F.relu(self.norm1(self.conv1(x)), inplace=True)
        y = F.relu(self.norm2(self.conv2(y)), inplace=True)
        skip = x if self.downsample is None else self.downsample(x)
        return F.relu(skip + y, inplace=True)


class CNNEncoder(nn.Module):
    """Feature extractor: 7x7/2 stem, three stages of two residual blocks (strides 1, 2, 2), 1x1 head.

    Args:
        out_channels: width of the 1/8-resolution output (``feature_channels``).
        channels: widths of the stem/stage 1, stage 2 and stage 3 (official: 64, 96, 128).
    """

    def __init__(self, out_channels: int = 128, channels: Sequence[int] = (64, 96, 128)):
        super().__init__()
        c1, c2, c3 = channels
        self.conv1 = nn.Conv2d(3, c1, 7, stride=2, padding=3, bias=False)
        self.norm1 = nn.InstanceNorm2d(c1)
        self.layer1 = nn.Sequential(ResidualBlock(c1, c1, 1), ResidualBlock(c1, c1))
        self.layer2 = nn.Sequential(ResidualBlock(c1, c2, 2), ResidualBlock(c2, c2))
        self.layer3 = nn.Sequential(ResidualBlock(c2, c3, 2), ResidualBlock(c3, c3))
        self.conv2 = nn.Conv2d(c3, out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        """(N, 3, H, W) normalised RGB -> (N, out_channels, H/8, W/8)."""
        x = F.relu(self.norm1(self.conv1(x)), inplace=True)
        return self.conv2(self.layer3(self.layer2(self.layer1(x))))


# ---------------------------------------------------------------------------------------------
# Position encoding and windows
# ---------------------------------------------------------------------------------------------
def sine_position_encoding(height: int, width: int, channels: int, device=None) -> Tensor:
    """DETR-style normalised 2-D sine encoding of a ``height`` x ``width`` grid.

    Coordinates 1..n are normalised to (0, 2*pi]; each axis gets ``channels // 2`` features
    alternating sin/cos at geometric frequencies 10000^(-2i/(channels/2)); y features come first.

    Returns:
        (1, channels, height, width) float32.
    """
    half = channels // 2
    eps, scale, temperature = 1e-6, 2 * math.pi, 10000
    y = torch.arange(1, height + 1, dtype=torch.float32, device=device)
    x = torch.arange(1, width + 1, dtype=torch.float32, device=device)
    y = y / (height + eps) * scale
    x = x / (width + eps) * scale
    i = torch.arange(half, dtype=torch.float32, device=device)
    freq = temperature ** (2 * torch.div(i, 2, rounding_mode="floor") / half)

    def encode(coord: Tensor) -> Tensor:  # (n,) -> (n, half): sin at even, cos at odd features
        angles = coord[:, None] / freq
        return torch.stack((angles[:, 0::2].sin(), angles[:, 1::2].cos()), dim=-1).flatten(1)

    pos_y = encode(y)[:, None, :].expand(height, width, half)
    pos_x = encode(x)[None, :, :].expand(height, width, half)
    return torch.cat((pos_y, pos_x), dim=-1).permute(2, 0, 1).unsqueeze(0)


def split_windows(x: Tensor, splits: int) -> Tensor:
    """(B, H, W, C) -> (B, splits*splits, H/splits * W/splits, C), windows in row-major order."""
    b, h, w, c = x.shape
    x = x.view(b, splits, h // splits, splits, w // splits, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, splits * splits, (h // splits) * (w // splits), c)


def merge_windows(x: Tensor, splits: int, height: int, width: int) -> Tensor:
    """Inverse of :func:`split_windows`: (B, splits*splits, N, C) -> (B, H, W, C)."""
    b, _, _, c = x.shape
    x = x.view(b, splits, splits, height // splits, width // splits, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, height, width, c)


def shifted_window_mask(height: int, width: int, splits: int, device=None) -> Tensor:
    """Additive attention mask for windows shifted by half a window (Swin).

    After rolling the map by (-h/2, -w/2) a window can hold pixels from up to 4 regions that are
    not neighbours in the image; tokens attend only within their own region (score + 0), other
    pairs get -100.

    Returns:
        (splits*splits, N, N) float32 with N = (height/splits) * (width/splits).
    """
    win_h, win_w = height // splits, width // splits
    shift_h, shift_w = win_h // 2, win_w // 2

    def bands(n: int, win: int, shift: int) -> Tensor:  # region id along one axis: 0, 1 or 2
        ids = torch.zeros(n, dtype=torch.float32, device=device)
        ids[n - win:n - shift] = 1
        ids[n - shift:] = 2
        return ids

    region = 3 * bands(height, win_h, shift_h)[:, None] + bands(width, win_w, shift_w)[None, :]
    region = split_windows(region[None, :, :, None], splits)[0, :, :, 0]  # (splits^2, N)
    different = region[:, :, None] != region[:, None, :]
    return different.float() * _SHIFT_MASK_VALUE


def window_attention(q: Tensor, k: Tensor, v: Tensor, height: int, width: int, splits: int,
                     shift: bool, mask: Tensor | None) -> Tensor:
    """Single-head attention inside ``splits`` x ``splits`` windows, optionally shifted.

    Args:
        q, k, v: (B, H*W, C) tokens in row-major order.
        mask: (splits^2, N, N) from :func:`shifted_window_mask`; used only when ``shift``.

    Returns:
        (B, H*W, C). Scores are scaled by 1/sqrt(C) as in the official code.
    """
    b, _, c = q.shape
    q, k, v = (t.view(b, height, width, c) for t in (q, k, v))
    # int(): the roll's shift is a constant of the image size, also when an ONNX export traces the sizes
    shift_hw = (int(height) // splits // 2, int(width) // splits // 2)
    if shift:
        q, k, v = (torch.roll(t, shifts=(-shift_hw[0], -shift_hw[1]), dims=(1, 2))
                   for t in (q, k, v))
    q, k, v = (split_windows(t, splits) for t in (q, k, v))  # (B, splits^2, N, C)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask if shift else None)
    out = merge_windows(out, splits, height, width)
    if shift:
        out = torch.roll(out, shifts=shift_hw, dims=(1, 2))
    return out.reshape(b, height * width, c)


# ---------------------------------------------------------------------------------------------
# Transformer
# ---------------------------------------------------------------------------------------------
class AttentionLayer(nn.Module):
    """``source + norm(merge(attn(source -> target)))``, optionally followed by an FFN.

    With ``ffn`` the message is instead ``norm2(mlp([source, norm1(merge(attn))]))``: the MLP sees
    the source and the attended message concatenated (2C -> 2C*expansion -> C, GELU, no biases).
    """

    def __init__(self, channels: int, ffn: bool, ffn_expansion: int, shift: bool):
        super().__init__()
        self.shift = shift
        self.q_proj = nn.Linear(channels, channels, bias=False)
        self.k_proj = nn.Linear(channels, channels, bias=False)
        self.v_proj = nn.Linear(channels, channels, bias=False)
        self.merge = nn.Linear(channels, channels, bias=False)
        self.norm1 = nn.LayerNorm(channels)
        self.mlp = None
        if ffn:
            hidden = 2 * channels * ffn_expansion
            self.mlp = nn.Sequential(nn.Linear(2 * channels, hidden, bias=False), nn.GELU(),
                                     nn.Linear(hidden, channels, bias=False))
            self.norm2 = nn.LayerNorm(channels)

    def forward(self, source: Tensor, target: Tensor, height: int, width: int, splits: int,
                mask: Tensor | None) -> Tensor:
        """source, target: (B, H*W, C) -> (B, H*W, C)."""
        q, k, v = self.q_proj(source), self.k_proj(target), self.v_proj(target)
        if splits > 1:
            message = window_attention(q, k, v, height, width, splits, self.shift, mask)
        else:
            message = F.scaled_dot_product_attention(q, k, v)
        message = self.norm1(self.merge(message))
        if self.mlp is not None:
            message = self.norm2(self.mlp(torch.cat((source, message), dim=-1)))
        return source + message


class TransformerBlock(nn.Module):
    """Self-attention (no FFN) then cross-attention + FFN, both on the same window layout."""

    def __init__(self, channels: int, ffn_expansion: int, shift: bool):
        super().__init__()
        self.self_attn = AttentionLayer(channels, ffn=False, ffn_expansion=ffn_expansion, shift=shift)
        self.cross_attn_ffn = AttentionLayer(channels, ffn=True, ffn_expansion=ffn_expansion,
                                             shift=shift)

    def forward(self, source: Tensor, target: Tensor, height: int, width: int, splits: int,
                mask: Tensor | None) -> Tensor:
        source = self.self_attn(source, source, height, width, splits, mask)
        return self.cross_attn_ffn(source, target, height, width, splits, mask)


class FeatureTransformer(nn.Module):
    """Stack of :class:`TransformerBlock`; odd-indexed blocks (1, 3, 5) use shifted windows."""

    def __init__(self, num_layers: int, channels: int, ffn_expansion: int):
        super().__init__()
        self.layers = nn.ModuleList(
            TransformerBlock(channels, ffn_expansion, shift=i % 2 == 1) for i in range(num_layers))

    def forward(self, feature0: Tensor, feature1: Tensor, splits: int) -> Tuple[Tensor, Tensor]:
        """(B, C, h, w) x 2 -> (B, C, h, w) x 2, each map updated by attending to the other."""
        b, c, h, w = feature0.shape
        mask = shifted_window_mask(h, w, splits, feature0.device) if splits > 1 else None
        # Both directions run as one batch of 2B: row i attends to row i of `target`, which holds
        # the other image's features, so feature0 and feature1 are updated symmetrically.
        source = torch.cat((feature0, feature1)).flatten(2).transpose(1, 2)  # (2B, h*w, C)
        for layer in self.layers:
            target = torch.cat(source.chunk(2)[::-1])
            source = layer(source, target, h, w, splits, mask)
        source = source.transpose(1, 2).reshape(2 * b, c, h, w)
        return source[:b], source[b:]


# ---------------------------------------------------------------------------------------------
# Matching, propagation, upsampling
# ---------------------------------------------------------------------------------------------
def attend_narrow_values(query: Tensor, key: Tensor, value: Tensor) -> Tensor:
    """``softmax(query key^T / sqrt(C)) value`` for values narrower than the queries.

    PyTorch's fused CPU attention needs equal query and value widths and otherwise falls back to
    materialising the (L, L) score matrix, 5x slower for GMFlow's 4096x4096 matching of a 512x512
    image. Zero-padding the value channels keeps the fused kernel and the result is unchanged.

    Args:
        query, key: (B, L, C); value: (B, L, V) with V <= C.

    Returns:
        (B, L, V).
    """
    width = value.shape[-1]
    padded = F.pad(value, (0, query.shape[-1] - width))
    return F.scaled_dot_product_attention(query, key, padded)[..., :width]


def pixel_grid(height: int, width: int, device=None, dtype=torch.float32) -> Tensor:
    """(height*width, 2) pixel coordinates (x, y) in row-major order."""
    ys, xs = torch.meshgrid(torch.arange(height, device=device, dtype=dtype),
                            torch.arange(width, device=device, dtype=dtype), indexing="ij")
    return torch.stack((xs, ys), dim=-1).view(-1, 2)


def global_matching(feature0: Tensor, feature1: Tensor) -> Tensor:
    """Flow from dense global correspondence (GMFlow Eq. 2-3).

    Every position p of img0 matches all positions of img1 with probability
    softmax_q(f0(p) . f1(q) / sqrt(C)); the flow is the expected matched coordinate minus p.

    Args:
        feature0, feature1: (B, C, h, w).

    Returns:
        (B, 2, h, w) flow in feature-grid pixels.
    """
    b, c, h, w = feature0.shape
    grid = pixel_grid(h, w, feature0.device, feature0.dtype)
    # Token-major copies: the fused attention kernel needs unit stride along channels.
    f0 = feature0.flatten(2).transpose(1, 2).contiguous()  # (B, h*w, C)
    f1 = feature1.flatten(2).transpose(1, 2).contiguous()
    matched = attend_narrow_values(f0, f1, grid.expand(b, -1, -1))  # (B, h*w, 2)
    return (matched - grid).transpose(1, 2).reshape(b, 2, h, w)


class FlowPropagation(nn.Module):
    """Global flow propagation by self-attention on img0's features (GMFlow Eq. 4).

    As in the released weights, the key is ``k_proj`` applied to the already projected query
    (a composition of two linear maps, equivalent in expressiveness to a separate key projection).
    """

    def __init__(self, channels: int):
        super().__init__()
        self.q_proj = nn.Linear(channels, channels)
        self.k_proj = nn.Linear(channels, channels)

    def forward(self, feature0: Tensor, flow: Tensor) -> Tensor:
        """feature0: (B, C, h, w), flow: (B, 2, h, w) -> propagated flow (B, 2, h, w)."""
        b, c, h, w = feature0.shape
        query = self.q_proj(feature0.flatten(2).transpose(1, 2))  # (B, h*w, C)
        key = self.k_proj(query)
        value = flow.flatten(2).transpose(1, 2)  # (B, h*w, 2)
        out = attend_narrow_values(query, key, value)
        return out.transpose(1, 2).reshape(b, 2, h, w)


def convex_upsample(flow: Tensor, mask_logits: Tensor, factor: int) -> Tensor:
    """Upsample a flow by a convex combination of each coarse pixel's 3x3 neighbourhood (RAFT).

    Args:
        flow: (B, 2, h, w) coarse flow in coarse pixels.
        mask_logits: (B, 9*factor*factor, h, w), channel index = neighbour*factor^2 + dy*factor + dx.
        factor: upsampling factor; flow values are scaled by it (coarse -> fine pixels).

    Returns:
        (B, 2, h*factor, w*factor).
    """
    b, _, h, w = flow.shape
    weights = mask_logits.view(b, 1, 9, factor, factor, h, w).softmax(dim=2)
    neighbours = F.unfold(factor * flow, kernel_size=3, padding=1).view(b, 2, 9, 1, 1, h, w)
    up = (weights * neighbours).sum(dim=2)  # (B, 2, dy, dx, h, w)
    return up.permute(0, 1, 4, 2, 5, 3).reshape(b, 2, h * factor, w * factor)


# ---------------------------------------------------------------------------------------------
# Networks
# ---------------------------------------------------------------------------------------------
@ARCHS.register()
class GMFlow(nn.Module):
    """GMFlow without refinement: global matching at 1/8 resolution, propagation, convex x8 upsampling.

    Defaults are the released configuration (4.68 M parameters). ``backbone_channels`` and
    ``upsampler_channels`` are fixed in the official code (64/96/128 and 256); they are exposed only
    so tiny test configurations can be cheap.

    Sizes: H and W need not be multiples of ``upsample_factor * attn_splits`` (16 by default);
    other sizes are replicate-padded at the bottom/right to the next multiple and the flow is
    cropped back (the official code asserts instead, so only multiples reproduce it exactly).
    """

    def __init__(self, feature_channels: int = 128, num_scales: int = 1, upsample_factor: int = 8,
                 num_head: int = 1, ffn_dim_expansion: int = 4, num_transformer_layers: int = 6,
                 attn_splits: int = 2, backbone_channels: Sequence[int] = (64, 96, 128),
                 upsampler_channels: int = 256):
        super().__init__()
        if num_scales != 1:
            raise ValueError(f"num_scales={num_scales}: only the single-scale GMFlow KEEP releases "
                             "(num_scales=1, no refinement) is implemented")
        if upsample_factor != 8:
            raise ValueError(f"upsample_factor={upsample_factor}: the backbone downsamples by 8, "
                             "so the convex upsampler must use 8")
        if num_head != 1:
            raise ValueError(f"num_head={num_head}: GMFlow's window attention is single-head; "
                             "use num_head=1")
        if feature_channels % 4:
            raise ValueError(f"feature_channels={feature_channels} must be a multiple of 4 "
                             "(sin/cos position features per axis)")
        if attn_splits < 1:
            raise ValueError(f"attn_splits={attn_splits} must be >= 1 (windows per side)")
        if len(backbone_channels) != 3:
            raise ValueError(f"backbone_channels={backbone_channels!r} needs 3 widths")
        self.upsample_factor = upsample_factor
        self.attn_splits = attn_splits
        self.backbone = CNNEncoder(feature_channels, tuple(backbone_channels))
        self.transformer = FeatureTransformer(num_transformer_layers, feature_channels,
                                              ffn_dim_expansion)
        self.feature_flow_attn = FlowPropagation(feature_channels)
        self.upsampler = nn.Sequential(
            nn.Conv2d(2 + feature_channels, upsampler_channels, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(upsampler_channels, upsample_factor ** 2 * 9, 1))
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, img0: Tensor, img1: Tensor) -> Tensor:
        """Flow from img0 to img1.

        Args:
            img0, img1: (N, 3, H, W) RGB in [0, 255], same shape.

        Returns:
            (N, 2, H, W) flow in pixels on img0's grid (channel 0 = x).
        """
        if img0.dim() != 4 or img0.shape[1] != 3 or img0.shape != img1.shape:
            raise ValueError(f"GMFlow expects two (N, 3, H, W) RGB batches of the same shape, got "
                             f"{tuple(img0.shape)} and {tuple(img1.shape)}")
        height, width = img0.shape[-2:]
        feature0, feature1 = self.features(torch.cat((img0, img1))).chunk(2)  # one backbone pass
        return self.flow_from_features(feature0, feature1, height, width)

    def features(self, images: Tensor) -> Tensor:
        """Backbone features of (N, 3, H, W) images in [0, 255] -> (N, C, H'/8, W'/8), H', W' padded.

        The backbone works on each image alone (instance norm included), so a frame shared by two
        pairs needs it only once (see :meth:`FlowEstimator.sequence`)."""
        height, width = images.shape[-2:]
        multiple = self.upsample_factor * self.attn_splits
        pad_h, pad_w = -height % multiple, -width % multiple
        if pad_h or pad_w:
            images = F.pad(images, (0, pad_w, 0, pad_h), mode="replicate")
        return self.backbone((images / 255.0 - self.mean) / self.std)

    def flow_from_features(self, feature0: Tensor, feature1: Tensor, height: int, width: int) -> Tensor:
        """Transformer, global matching, propagation and x8 upsampling on paired backbone features;
        returns the flow from image 0 to image 1 cropped to (N, 2, height, width)."""
        h, w = feature0.shape[-2:]
        position = sine_position_encoding(h // self.attn_splits, w // self.attn_splits,
                                          feature0.shape[1], feature0.device).to(feature0.dtype)
        # The encoding restarts in every attention window (it is computed per split window).
        position = position.repeat(1, 1, self.attn_splits, self.attn_splits)
        feature0, feature1 = self.transformer(feature0 + position, feature1 + position,
                                              self.attn_splits)

        flow = global_matching(feature0, feature1)
        # Propagation does not back-propagate into matching (official: flow.detach()).
        flow = self.feature_flow_attn(feature0, flow.detach())
        flow = convex_upsample(flow, self.upsampler(torch.cat((flow, feature0), dim=1)),
                               self.upsample_factor)
        return flow[:, :, :height, :width]


@ARCHS.register()
class FlowEstimator(nn.Module):
    """What KEEP holds as ``flownet``: GMFlow behind KEEP's [-1, 1] image convention.

    Its only child is ``model`` (so the checkpoint keys read ``flownet.model.*``). KEEP calls it as
    ``FlowEstimator(frame_t, frame_t_minus_1)`` to get the flow that backward-warps the previous
    output onto frame t. Freezing is the caller's business (a stage setting).
    """

    def __init__(self, **gmflow_kwargs):
        super().__init__()
        self.model = GMFlow(**gmflow_kwargs)

    def forward(self, img0: Tensor, img1: Tensor) -> Tensor:
        """img0, img1: (N, 3, H, W) RGB in [-1, 1] -> flow img0 -> img1, (N, 2, H, W) pixels."""
        # The release's arithmetic, (x + 1) / 2 * 255, kept so rounding follows it too.
        return self.model((img0 + 1) / 2 * 255, (img1 + 1) / 2 * 255)

    def sequence(self, frames: Tensor) -> Tensor:
        """Flows between consecutive frames, each frame through the backbone once.

        Args:
            frames: (B, L, 3, H, W) RGB in [-1, 1], L >= 2.

        Returns:
            (B, L-1, 2, H, W): entry l is the flow from frame l+1 to frame l (what backward-warps
            frame l onto frame l+1), equal to ``self(frames[:, l+1], frames[:, l])``.
        """
        b, length, _, height, width = frames.shape
        if length < 2:
            raise ValueError(f"need at least 2 frames for a flow, got {length}")
        features = self.model.features((frames.flatten(0, 1) + 1) / 2 * 255)
        features = features.view(b, length, *features.shape[1:])
        current = features[:, 1:].flatten(0, 1)
        previous = features[:, :-1].flatten(0, 1)
        flow = self.model.flow_from_features(current, previous, height, width)
        return flow.view(b, length - 1, 2, height, width)
