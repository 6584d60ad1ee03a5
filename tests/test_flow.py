"""Tests of keep/archs/flow.py: GMFlow pieces against independent references, and the whole network
against the official release's outputs (conformance data in ../shared)."""
import json
import math

import numpy as np
import pytest
import torch

from keep.archs.flow import (FlowEstimator, GMFlow, convex_upsample, global_matching,
                             shifted_window_mask, sine_position_encoding, split_windows,
                             window_attention)
from keep.registry import ARCHS

from shared_material import CONFORMANCE, TOLERANCE, load_fill, require

PREFIX = "flownet.model."
TINY = dict(feature_channels=32, num_transformer_layers=2, backbone_channels=(8, 12, 16),
            upsampler_channels=16)


def _needs_shared():
    require(CONFORMANCE / "keep_seed0.npz")


# ------------------------------------------------------------------------------------------
# Official release
# ------------------------------------------------------------------------------------------
def test_parameter_names_and_shapes_equal_the_release():
    _needs_shared()
    manifest = json.loads((CONFORMANCE / "keep_released_keys.json").read_text())
    released = {key[len(PREFIX):]: tuple(shape) for key, shape, _ in manifest["keys"]
                if key.startswith(PREFIX)}
    state = FlowEstimator().model.state_dict()
    ours = {key: tuple(value.shape) for key, value in state.items()}
    assert list(ours) == list(released)  # same keys in the same order
    assert ours == released
    assert sum(v.numel() for v in state.values()) == sum(math.prod(s) for s in released.values())
    assert round(sum(v.numel() for v in state.values()) / 1e6, 2) == 4.68


def test_flows_match_the_official_release():
    """Filled weights (seed 0), frames of keep_seed0.npz: flow t -> t-1 within the README's 5e-2."""
    _needs_shared()
    fill_state_dict = load_fill()
    net = FlowEstimator().eval()
    filled = fill_state_dict({PREFIX + k: v for k, v in net.model.state_dict().items()}, seed=0)
    net.model.load_state_dict({k[len(PREFIX):]: v for k, v in filled.items()}, strict=True)

    data = np.load(CONFORMANCE / "keep_seed0.npz")
    frames = torch.from_numpy(data["frames"]).permute(0, 3, 1, 2).float()
    x = (frames / 255 - 0.5) / 0.5  # (T, 3, 512, 512) in [-1, 1]
    expected = torch.from_numpy(data["flows"])[0]  # (T-1, 2, 512, 512)
    with torch.no_grad():
        flows = net(x[1:], x[:-1])  # all pairs (t, t-1) as one batch
    assert flows.shape == expected.shape
    assert expected.abs().mean() > 1  # the reference is not trivially zero
    assert (flows - expected).abs().max().item() <= TOLERANCE["flows"]


# ------------------------------------------------------------------------------------------
# Whole network, tiny configuration
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("attn_splits", [2, 1])
def test_tiny_config_shapes_and_registry(attn_splits):
    torch.manual_seed(0)
    net = ARCHS.build({"type": "FlowEstimator", **TINY, "attn_splits": attn_splits}).eval()
    assert isinstance(net.model, GMFlow) and [n for n, _ in net.named_children()] == ["model"]
    x0, x1 = torch.rand(2, 2, 3, 64, 96) * 2 - 1
    with torch.no_grad():
        flow = net(x0, x1)
    assert flow.shape == (2, 2, 64, 96) and flow.dtype == torch.float32
    assert torch.isfinite(flow).all()


def test_gradients_reach_every_parameter_and_the_images():
    """The flow net may be trained; propagation sees a detached flow but features keep gradients."""
    torch.manual_seed(0)
    net = FlowEstimator(**TINY)
    images = (torch.rand(2, 1, 3, 32, 48) * 2 - 1).requires_grad_()
    net(images[0], images[1]).square().mean().backward()
    assert images.grad.abs().sum() > 0
    assert [n for n, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum()] == []


def test_estimator_maps_minus_one_one_to_0_255():
    torch.manual_seed(0)
    net = FlowEstimator(**TINY).eval()
    x0, x1 = torch.rand(2, 1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.equal(net(x0, x1), net.model((x0 + 1) / 2 * 255, (x1 + 1) / 2 * 255))


def test_sequence_equals_pairwise_flows_with_one_backbone_pass_per_frame():
    """KEEP's window flows: every frame through the backbone once, same result as pair by pair."""
    torch.manual_seed(0)
    net = FlowEstimator(**TINY).eval()
    frames = torch.rand(2, 4, 3, 64, 96) * 2 - 1
    calls = []
    net.model.backbone.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    with torch.no_grad():
        flows = net.sequence(frames)
        assert calls == [8]  # B * L frames, not 2 * B * (L - 1)
        for t in range(1, 4):
            expected = net(frames[:, t], frames[:, t - 1])
            torch.testing.assert_close(flows[:, t - 1], expected, atol=1e-4, rtol=1e-4)


def test_sizes_off_the_grid_are_padded_then_cropped():
    """50x70 is padded (replicate, bottom/right) to 64x80; the top-left crop of the padded run is returned."""
    torch.manual_seed(0)
    net = GMFlow(**TINY).eval()
    img0, img1 = torch.rand(2, 1, 3, 50, 70) * 255
    pad = lambda im: torch.nn.functional.pad(im, (0, 10, 0, 14), mode="replicate")  # noqa: E731
    with torch.no_grad():
        flow = net(img0, img1)
        padded = net(pad(img0), pad(img1))
    assert flow.shape == (1, 2, 50, 70)
    assert torch.allclose(flow, padded[:, :, :50, :70], atol=1e-4)


@pytest.mark.parametrize("shapes", [((1, 3, 32, 32), (1, 3, 32, 48)), ((1, 1, 32, 32),) * 2,
                                    ((3, 32, 32),) * 2])
def test_bad_inputs_raise_clear_errors(shapes):
    net = GMFlow(**TINY)
    with pytest.raises(ValueError, match="expects two"):
        net(torch.zeros(shapes[0]), torch.zeros(shapes[1]))


@pytest.mark.parametrize("kwargs", [dict(num_scales=2), dict(num_head=2), dict(upsample_factor=4),
                                    dict(attn_splits=0), dict(feature_channels=30)])
def test_unsupported_configurations_raise(kwargs):
    with pytest.raises(ValueError):
        GMFlow(**kwargs)


def test_transformer_updates_both_images_symmetrically():
    """Swapping the two inputs must swap the two outputs (both run as one 2B batch)."""
    torch.manual_seed(0)
    net = GMFlow(**TINY).eval()
    f0, f1 = torch.randn(2, 1, 32, 8, 12)
    with torch.no_grad():
        a0, a1 = net.transformer(f0, f1, 2)
        b0, b1 = net.transformer(f1, f0, 2)
    assert torch.allclose(a0, b1, atol=1e-5) and torch.allclose(a1, b0, atol=1e-5)
    assert not torch.allclose(a0, a1, atol=1e-2)


# ------------------------------------------------------------------------------------------
# Pieces against independent references
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shift", [(0, 0), (2, -3), (-1, 4)])
def test_global_matching_recovers_a_known_shift(shift):
    """img0(p) = img1(p + d) with distinctive features -> flow d wherever p + d is inside the map."""
    dy, dx = shift
    h, w, c = 12, 16, 64
    g = torch.Generator().manual_seed(1)
    feature1 = torch.randn(1, c, h, w, generator=g)
    feature1 = 20 * feature1 / feature1.norm(dim=1, keepdim=True) * math.sqrt(math.sqrt(c))
    feature0 = torch.roll(feature1, shifts=(-dy, -dx), dims=(2, 3))
    flow = global_matching(feature0, feature1)
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    inside = (ys + dy >= 0) & (ys + dy < h) & (xs + dx >= 0) & (xs + dx < w)
    assert torch.allclose(flow[0, 0][inside], torch.full_like(flow[0, 0][inside], dx), atol=1e-3)
    assert torch.allclose(flow[0, 1][inside], torch.full_like(flow[0, 1][inside], dy), atol=1e-3)


def test_global_matching_equals_explicit_softmax_expectation():
    g = torch.Generator().manual_seed(2)
    b, c, h, w = 2, 16, 6, 10
    f0, f1 = torch.randn(2, b, c, h, w, generator=g)
    scores = torch.einsum("bcp,bcq->bpq", f0.flatten(2), f1.flatten(2)).double() / math.sqrt(c)
    ys, xs = np.mgrid[0:h, 0:w]
    coords = torch.from_numpy(np.stack([xs.ravel(), ys.ravel()], 1)).double()  # (h*w, 2) as (x, y)
    expected = (scores.softmax(-1) @ coords - coords).transpose(1, 2).reshape(b, 2, h, w)
    assert torch.allclose(global_matching(f0, f1).double(), expected, atol=1e-4)


def test_convex_upsampling_of_a_constant_flow_is_factor_times_it():
    """Weights sum to 1, so away from the zero-padded border a constant flow becomes 8x it."""
    g = torch.Generator().manual_seed(3)
    flow = torch.tensor([1.5, -0.25]).view(1, 2, 1, 1).expand(1, 2, 5, 6)
    up = convex_upsample(flow, torch.randn(1, 9 * 64, 5, 6, generator=g), 8)
    assert up.shape == (1, 2, 40, 48)
    interior = up[:, :, 8:-8, 8:-8]
    assert torch.allclose(interior, 8 * flow[:, :, :1, :1].expand_as(interior), atol=1e-5)


def test_convex_upsampling_picks_the_neighbour_the_mask_selects():
    """Sub-pixel rows 0-3 take the neighbour above, rows 4-7 the one below; checks the layout."""
    g = torch.Generator().manual_seed(4)
    flow = torch.randn(1, 2, 4, 5, generator=g)
    logits = torch.zeros(1, 9, 8, 8, 4, 5)
    logits[:, 1, :4] = 50.0  # neighbour index 1 = (dy=-1, dx=0) for the upper half of each cell
    logits[:, 7, 4:] = 50.0  # neighbour index 7 = (dy=+1, dx=0) for the lower half
    up = convex_upsample(flow, logits.view(1, 9 * 64, 4, 5), 8)
    padded = torch.nn.functional.pad(8 * flow, (0, 0, 1, 1))  # zero rows above and below
    above = padded[:, :, :-2].repeat_interleave(8, 2).repeat_interleave(8, 3)
    below = padded[:, :, 2:].repeat_interleave(8, 2).repeat_interleave(8, 3)
    upper_half = (torch.arange(32) % 8 < 4).view(1, 1, 32, 1)
    assert torch.allclose(up, torch.where(upper_half, above, below), atol=1e-4)


def test_sine_position_encoding_matches_its_formula():
    h, w, c = 3, 5, 8
    pos = sine_position_encoding(h, w, c).double().numpy()[0]
    half = c // 2
    expected = np.zeros((c, h, w))
    for y in range(h):
        for x in range(w):
            for i in range(half):
                freq = 10000 ** (2 * (i // 2) / half)
                ay = (y + 1) / h * 2 * math.pi / freq
                ax = (x + 1) / w * 2 * math.pi / freq
                expected[i, y, x] = math.sin(ay) if i % 2 == 0 else math.cos(ay)
                expected[half + i, y, x] = math.sin(ax) if i % 2 == 0 else math.cos(ax)
    assert np.allclose(pos, expected, atol=1e-5)


def test_shifted_window_mask_allows_only_pixels_that_were_contiguous():
    """After rolling by half a window, two tokens may attend iff neither or both wrapped around."""
    h, w, k = 8, 12, 2
    mask = shifted_window_mask(h, w, k)
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    wrapped_y = (ys >= h - (h // k) // 2).float()
    wrapped_x = (xs >= w - (w // k) // 2).float()
    tags = split_windows(torch.stack((wrapped_y, wrapped_x), -1)[None], k)[0]  # (k*k, N, 2)
    same = (tags[:, :, None, :] == tags[:, None, :, :]).all(-1)
    assert mask.shape == (k * k, (h // k) * (w // k), (h // k) * (w // k))
    assert torch.equal(mask, torch.where(same, 0.0, -100.0))


@pytest.mark.parametrize("shift", [False, True])
def test_window_attention_equals_a_loop_over_windows(shift):
    g = torch.Generator().manual_seed(5)
    b, h, w, c, k = 2, 8, 12, 16, 2
    q, key, v = torch.randn(3, b, h * w, c, generator=g)
    mask = shifted_window_mask(h, w, k)
    out = window_attention(q, key, v, h, w, k, shift, mask)

    sh, sw = (h // k // 2, w // k // 2) if shift else (0, 0)
    grid = lambda t: torch.roll(t.view(b, h, w, c), (-sh, -sw), (1, 2))  # noqa: E731
    qg, kg, vg = grid(q), grid(key), grid(v)
    expected = torch.empty(b, h, w, c)
    for i in range(k):
        for j in range(k):
            rows, cols = slice(i * h // k, (i + 1) * h // k), slice(j * w // k, (j + 1) * w // k)
            qw, kw, vw = (t[:, rows, cols].reshape(b, -1, c) for t in (qg, kg, vg))
            scores = qw @ kw.transpose(1, 2) / math.sqrt(c)
            if shift:
                scores = scores + mask[i * k + j]
            expected[:, rows, cols] = (scores.softmax(-1) @ vw).view(b, h // k, w // k, c)
    expected = torch.roll(expected, (sh, sw), (1, 2)).view(b, h * w, c)
    assert torch.allclose(out, expected, atol=1e-5)
