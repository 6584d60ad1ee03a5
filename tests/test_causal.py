"""Causal network mode (live restoration): the gain's temporal attention sees past frames only, through a
banded causal mask over a key/value cache carried in the state."""
import pytest
import torch

from keep.archs.kalman import KalmanFilterNet, causal_band_mask
from keep.archs.keep_net import KEEP
from test_archs import randomise_
from test_streaming import T, make_net  # MICRO KEEP at 32 px, 3 uncertainty blocks, random weights

pytestmark = pytest.mark.usefixtures("one_thread")


def moving_clip(frames: int, seed: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    base = torch.rand(1, 1, 3, 32, 32, generator=gen) * 2 - 1
    clip = [torch.roll(base, shifts=(i, 2 * i), dims=(-2, -1)) + 0.05 * torch.randn(base.shape, generator=gen)
            for i in range(frames)]
    return torch.cat(clip, dim=1).clamp(-1, 1)


def causal_net(window: int = 8) -> KEEP:
    net = make_net(temporal_attention=True)
    net.kalman_filter.window = window
    return net


def test_band_mask():
    mask = causal_band_mask(3, 2, 3, torch.device("cpu"))
    # query i sits at stream position 2 + i and sees positions 2 + i - 2 .. 2 + i
    assert mask.tolist() == [[True, True, True, False, False],
                             [False, True, True, True, False],
                             [False, False, True, True, True]]


@pytest.mark.parametrize("cut", [2, 4])
def test_outputs_before_a_perturbation_are_bit_identical(cut):
    net = causal_net()
    x = moving_clip(6)
    later = x.clone()
    later[:, cut:] = (later[:, cut:] + 0.5 * torch.randn_like(later[:, cut:])).clamp(-1, 1)
    with torch.inference_mode():
        a = net(x, causal=True, return_intermediates=True)
        b = net(later, causal=True, return_intermediates=True)
        plain_a, plain_b = net(x), net(later)
    assert torch.equal(a.frames[:, :cut], b.frames[:, :cut])
    assert torch.equal(a.gains[:, :cut], b.gains[:, :cut])
    assert (a.frames[:, cut:] - b.frames[:, cut:]).abs().max() > 1e-3   # the perturbation does something
    # the release's window-wide attention is not causal: its earlier gains and frames move
    with torch.inference_mode():
        gains_a = net(x, return_intermediates=True).gains
        gains_b = net(later, return_intermediates=True).gains
    assert (gains_a[:, 1:cut] - gains_b[:, 1:cut]).abs().max() > 1e-4
    assert not torch.equal(plain_a[:, :cut], plain_b[:, :cut])


@pytest.mark.parametrize("window", [8, 3])
def test_frame_by_frame_equals_one_window_and_any_split(window):
    net = causal_net(window)
    x = moving_clip(7)
    with torch.inference_mode():
        full = net(x, causal=True, return_intermediates=True)
        state, frames = None, []
        for i in range(x.shape[1]):
            out, state = net.restore_frame(x[:, i], state)
            frames.append(out)
        split, split_state = [], None
        for lo, hi in ((0, 3), (3, 4), (4, 7)):
            out, split_state = net.restore_window(x[:, lo:hi], split_state, causal=True)
            split.append(out)
    assert full.gains[:, 1:].std() > 1e-3        # non-trivial gains
    torch.testing.assert_close(torch.stack(frames, 1), full.frames, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(torch.cat(split, 1), full.frames, rtol=1e-4, atol=1e-4)
    assert state.frames_seen == 7
    assert all(k.shape[1] == min(window - 1, 7) for k, _ in state.gain_context.temporal)


@pytest.mark.parametrize("window", [10, 3])
def test_causal_gain_matches_the_release_attention_over_exactly_the_visible_frames(window):
    """Independent reference (one uncertainty block, where it is exact): the release's window-wide
    temporal attention of the *last* frame of a window spans exactly that window, so the causal gain of
    frame t equals the release's gain of the last frame of the window t-W+1 .. t (context of the
    frames before it carried as the release's streaming does)."""
    net = randomise_(KalmanFilterNet(dim=16, num_layers=1, heads=2, dim_head=8, window=window), seed=3).eval()
    z = torch.randn(1, 8, 16, 4, 4, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        causal, _ = net.gains(z, causal=True)
        for t in range(8):
            lo = max(0, t - window + 1)
            context = None if lo == 0 else net.gains(z[:, :lo])[1]
            reference, _ = net.gains(z[:, lo:t + 1], context)
            torch.testing.assert_close(causal[:, t], reference[:, -1], rtol=1e-5, atol=1e-6)
        plain, _ = net.gains(z)
    assert (plain[:, :-1] - causal[:, :-1]).abs().max() > 1e-4   # the mask changes the earlier gains


def state_bytes(state) -> int:
    ctx = state.gain_context
    tensors = [state.prev_input, state.prev_output, *state.prev_feats.values(), *ctx.anchor, *ctx.prev,
               *(t for pair in ctx.temporal for t in pair)]
    return sum(t.numel() * t.element_size() for t in tensors)


def test_state_memory_is_constant_in_the_stream_length():
    net = causal_net(window=3)
    x = moving_clip(9)
    sizes = []
    with torch.inference_mode():
        state = None
        for i in range(9):
            _, state = net.restore_frame(x[:, i], state)
            sizes.append(state_bytes(state))
    assert sizes[0] < sizes[1] == sizes[2] == sizes[5] == sizes[8]   # the cache fills to W-1 = 2 frames, then rolls


def test_causal_constructor_flag_and_defaults():
    torch.manual_seed(0)
    default = make_net()
    assert default.kalman_filter.causal is False and default.kalman_filter.window == 8
    live = make_net()
    live.kalman_filter.causal = True
    x = moving_clip(T)
    with torch.inference_mode():
        released, flagged = default(x), live(x)
        state, streamed = None, []
        for i in range(T):   # restore_frame is causal whatever the flag: the causal reference, frame by frame
            frame, state = default.restore_frame(x[:, i], state)
            streamed.append(frame)
        out, state = default.restore_window(x)
    # the flag makes the whole-window forward causal: it equals the frame-by-frame stream (to float
    # rounding) and differs from the release's window-wide attention, which the default keeps
    torch.testing.assert_close(flagged, torch.stack(streamed, 1), rtol=1e-4, atol=1e-4)
    assert (released - flagged).abs().max() > 1e-2
    assert state.gain_context.temporal is None       # the release's path carries no cache
    # the constructor kwarg (what a YAML `net:` passes) reaches the Kalman net; no new parameters
    with torch.device("meta"):
        built = KEEP(img_size=32, nf=4, ch_mult=(1, 2), emb_dim=8, codebook_size=8, dim_embd=16, n_head=2,
                     n_layers=1, connect_list=("16",), cross_fuse_list=("16",), cross_fuse_nhead=1,
                     cross_fuse_dim=8, num_uncertainty_layers=1, kalman_attn_heads=2, kalman_attn_head_dim=4,
                     causal=True, causal_window=5)
        plain = KEEP(img_size=32, nf=4, ch_mult=(1, 2), emb_dim=8, codebook_size=8, dim_embd=16, n_head=2,
                     n_layers=1, connect_list=("16",), cross_fuse_list=("16",), cross_fuse_nhead=1,
                     cross_fuse_dim=8, num_uncertainty_layers=1, kalman_attn_heads=2, kalman_attn_head_dim=4)
    assert (built.kalman_filter.causal, built.kalman_filter.window) == (True, 5)
    assert list(built.state_dict()) == list(plain.state_dict())
    with pytest.raises(ValueError, match="at least 1 frame"):
        KalmanFilterNet(dim=8, num_layers=1, heads=2, dim_head=4, window=0)


def test_causal_training_mode_has_gradients_and_detach_cuts_the_cache():
    net = causal_net()
    net.train()
    x = moving_clip(4)
    out = net(x, causal=True, detach_codes=False)
    out.logits.logsumexp(-1).mean().backward()
    grads = [p.grad for p in net.kalman_filter.uncertainty_estimator[0].attn_temp.parameters()]
    assert all(g is not None and g.abs().sum() > 0 for g in grads)
    cut = out.state.detach()
    assert all(not k.requires_grad and not v.requires_grad for k, v in cut.gain_context.temporal)
